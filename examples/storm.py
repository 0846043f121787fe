"""
A 429 storm, absorbed: one Retry-After makes every concurrent caller of the key wait.

    python examples/storm.py

A loopback server accepts 50 requests per 0.5 s window and answers 429 with Retry-After (the
time left in its window) beyond that. 100 concurrent callers fetch from it twice: first with
``@retry`` alone, where every caller learns about the limit by hitting it; then with a
``@rate_limited`` layer under the retry, whose shared backoff window opens on the first 429,
so the other callers wait it out instead of piling on, and whose budget (set a little above
the server's, which clients rarely know exactly) spaces them from then on. Loopback only; a
few seconds.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx

from resilience import Backoff, backoff_window, rate_limited, retry
from resilience.http import is_retryable_error, server_delay
from resilience.testing import reset


class LimitedServer(BaseHTTPRequestHandler):
    """50 requests per 0.5 s fixed window; 429 with Retry-After beyond that."""

    protocol_version = "HTTP/1.1"
    LIMIT, WINDOW = 50, 0.5
    state: ClassVar[dict[str, float]] = {"start": 0.0, "count": 0, "ok": 0, "rejected": 0}
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.state["start"] >= self.WINDOW:
                self.state["start"], self.state["count"] = now, 0
            self.state["count"] += 1
            allowed = self.state["count"] <= self.LIMIT
            self.state["ok" if allowed else "rejected"] += 1
            left = self.WINDOW - (now - self.state["start"])
        if allowed:
            self._reply(200, {})
        else:
            self._reply(429, {"Retry-After": f"{left:.3f}"})

    def _reply(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def storm(base: str, *, window: bool) -> tuple[float, int]:
    """100 callers at once; return (seconds, 429s the server sent)."""
    LimitedServer.state.update(start=0.0, count=0, ok=0, rejected=0)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=10.0, limits=limits) as client:

        async def call() -> int:
            response = await client.get("/")
            response.raise_for_status()
            return response.status_code

        resilient = retry(
            attempts=None,
            timeout=30,
            on=is_retryable_error,
            delay_hook=server_delay,
            backoff=Backoff(base=0.05),
        )
        if window:
            # a budget a bit above the server's (it does not know the exact limit), sharing one
            # backoff window that the first 429 opens for every caller
            call = rate_limited(rate=60, per=0.5, key="storm-api")(call)
        fetch = resilient(call)
        started = time.monotonic()
        codes = await asyncio.gather(*(fetch() for _ in range(100)))
        assert codes == [200] * 100
        return time.monotonic() - started, int(LimitedServer.state["rejected"])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent connects: the default backlog of 5 drops SYNs


def main() -> int:
    server = Server(("127.0.0.1", 0), LimitedServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        alone = asyncio.run(storm(base, window=False))
        reset()
        shared = asyncio.run(storm(base, window=True))
        opened = backoff_window("storm-api")
    finally:
        server.shutdown()
        server.server_close()
    print("100 concurrent callers against a server that takes 50 requests per 0.5 s")
    print(f"  {'':<36} {'time':>7} {'429s':>6}")
    print(f"  {'@retry alone':<36} {alone[0]:>6.2f}s {alone[1]:>6}")
    print(f"  {'@retry + shared window and budget':<36} {shared[0]:>6.2f}s {shared[1]:>6}")
    print(
        f"every caller got its 200; the shared window took {alone[1]} 429s down to {shared[1]} ({opened.key!r})."
    )
    if shared[1] == alone[1]:
        # a machine too busy to send 100 requests at once sees no storm to absorb: the server's
        # windows pass before a burst forms (the window's rules are tested on virtual time)
        print("no fewer 429s this run: the requests arrived too slowly for a storm to form.")
    return 0 if shared[1] <= alone[1] else 1


if __name__ == "__main__":
    sys.exit(main())
