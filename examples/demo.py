"""
The first thing to run: a flaky HTTP server on loopback, and a client that rides through it.

    python examples/demo.py

A local server (127.0.0.1, a free port) misbehaves the way real upstreams do: it answers
429 with Retry-After, throws 503s, stalls, and has one endpoint that is simply dead. The client
calls it through ``resilience`` decorators and a short summary table says what happened.
No network beyond loopback; it finishes in a few seconds.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import structlog

from resilience import (
    Backoff,
    CircuitOpenError,
    bounded,
    circuit_breaker,
    get_circuit_breaker,
    rate_limited,
    retry,
    traced,
)
from resilience.http import is_retryable_error, server_delay
from resilience.telemetry import Event, attach, attach_structlog


class FlakyUpstream(BaseHTTPRequestHandler):
    """
    /items/N     healthy but takes 30 ms (so concurrency limits show)
    /busy        the first request gets 429 + Retry-After: 0.3, the rest 200
    /unstable    503 twice, then 200
    /stall       the first request stalls 2 s, the rest answer at once
    /dead        always 500: the upstream is down
    """

    protocol_version = "HTTP/1.1"
    hits: ClassVar[Counter[str]] = Counter()
    in_flight: ClassVar[list[int]] = [0, 0]  # now, peak
    lock = threading.Lock()

    def do_GET(self) -> None:
        route = "/" + self.path.strip("/").split("/")[0]
        with self.lock:
            self.hits[route] += 1
            n = self.hits[route]
            self.in_flight[0] += 1
            self.in_flight[1] = max(self.in_flight)
        try:
            if route == "/items":
                time.sleep(0.03)
                self._reply(200)
            elif route == "/busy" and n == 1:
                self._reply(429, {"Retry-After": "0.3"})
            elif route == "/unstable" and n <= 2:
                self._reply(503)
            elif route == "/stall" and n == 1:
                time.sleep(2.0)
                self._reply(200)
            elif route == "/dead":
                self._reply(500)
            else:
                self._reply(200)
        finally:
            with self.lock:
                self.in_flight[0] -= 1

    def _reply(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = f'{{"status": {status}}}'.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


async def run(base: str) -> Counter[str]:
    seen: Counter[str] = Counter()

    def tally(event: Event) -> None:
        name = event.name.removeprefix("resilience.")
        if name == "retry.retry":
            name += (
                " (server's Retry-After)" if event.metadata.get("server_delay") else " (backoff)"
            )
        if name == "breaker.state_change":
            name += f" {event.metadata['from']} -> {event.metadata['to']}"
        seen[name] += 1

    attach(tally)
    attach_structlog(
        ["resilience.retry.retry", "resilience.breaker.state_change", "resilience.window"]
    )

    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:

        @traced("api.get", log=False)
        @retry(
            attempts=5,
            on=is_retryable_error,
            delay_hook=server_delay,
            attempt_timeout=0.5,
            backoff=Backoff(base=0.05, max=1.0),
            name="api.get",
        )
        @rate_limited(rate=50, per=1.0, key="demo-api")  # a 429's Retry-After opens its window
        @bounded(limit=4, key="demo-api")
        async def get(path: str) -> int:
            response = await client.get(path)
            response.raise_for_status()  # errors carry .response, so Retry-After is seen
            return response.status_code

        @circuit_breaker(
            name="dead-endpoint", failure_threshold=3, reset_timeout=30, fallback=lambda exc: None
        )
        async def get_dead() -> int:
            response = await client.get("/dead")
            response.raise_for_status()
            return response.status_code

        print("\n1. twelve concurrent requests, at most 4 in flight (@bounded):")
        codes = await asyncio.gather(*(get(f"/items/{i}") for i in range(12)))
        print(
            f"   {len(codes)} x {set(codes)}; server saw at most {FlakyUpstream.in_flight[1]} at once"
        )

        print("\n2. a 429 with Retry-After opens the key's backoff window for every caller:")
        busy = asyncio.create_task(get("/busy"))
        await asyncio.sleep(0.05)  # the 429 has arrived: the window is open
        waiting_since = time.monotonic()
        codes = await asyncio.gather(*(get(f"/items/w{i}") for i in range(3)))
        waited = time.monotonic() - waiting_since
        print(
            f"   3 other callers waited {waited:.2f} s for the window, then got {codes}; /busy got {await busy}"
        )

        print("\n3. 503, 503, then 200 (@retry with jittered backoff):")
        print(f"   answered {await get('/unstable')}")

        print("\n4. a stalled attempt is cancelled after 0.5 s and retried (attempt_timeout):")
        print(f"   answered {await get('/stall')}")

        print(
            "\n5. a dead endpoint opens its circuit breaker; the fallback answers without calling:"
        )
        answers = [await get_dead() for _ in range(6)]
        breaker = get_circuit_breaker("dead-endpoint")
        print(
            f"   answers {answers}; breaker is {breaker.state}; server saw {FlakyUpstream.hits['/dead']} calls"
        )

        @circuit_breaker(name="dead-endpoint", failure_threshold=3, reset_timeout=30)
        async def get_dead_strict() -> int:  # the same breaker, without a fallback
            return await get_dead()

        try:
            await get_dead_strict()
        except CircuitOpenError as error:
            print(f"   a caller without a fallback sees: {error}")
    return seen


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent connects: the default backlog of 5 drops SYNs


def main() -> int:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    )
    server = Server(("127.0.0.1", 0), FlakyUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"flaky upstream on {base}")
    started = time.monotonic()
    try:
        seen = asyncio.run(run(base))
    finally:
        server.shutdown()
        server.server_close()
    print("\nsummary of events")
    print(f"   {'event':<48} {'count':>5}")
    for name, count in sorted(seen.items()):
        print(f"   {name:<48} {count:>5}")
    print(f"\ndone in {time.monotonic() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
