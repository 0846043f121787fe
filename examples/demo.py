"""
The first thing to run: a flaky HTTP server on loopback, and a client that rides through it.

    python examples/demo.py

It starts a local server (127.0.0.1, a free port) whose endpoints misbehave the way real
upstreams do, then calls them through ``resilience`` decorators and prints what happened.
No network beyond loopback; finishes in a few seconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from resilience import Backoff, retry
from resilience.telemetry import attach


class FlakyHandler(BaseHTTPRequestHandler):
    """Endpoints: /rate-limited (429 + Retry-After, then 200), /unstable (503 twice, then 200)."""

    hits: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/rate-limited" and n == 1:
            self._reply(429, {"error": "slow down"}, {"Retry-After": "0.2"})
        elif self.path == "/unstable" and n <= 2:
            self._reply(503, {"error": "try again"})
        else:
            self._reply(200, {"path": self.path, "attempt": n})

    def _reply(
        self, status: int, body: dict[str, object], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # quiet server
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"flaky server on {base}")

    waits: list[tuple[str, float, bool]] = []
    attach(
        lambda e: waits.append(
            (e.metadata["name"], e.measurements["delay"], e.metadata["server_delay"])
        ),
        "resilience.retry.retry",
    )

    @retry(attempts=5, backoff=Backoff(base=0.05, max=1.0), on=urllib.error.HTTPError, name="GET")
    def get(path: str) -> dict[str, object]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            error.close()  # its headers (Retry-After) stay readable
            raise

    started = time.monotonic()
    for path in ("/rate-limited", "/unstable", "/healthy"):
        body = get(path)
        print(f"  {path:<14} -> 200 after {body['attempt']} attempt(s)")
    for name, delay, from_server in waits:
        source = "server's Retry-After" if from_server else "backoff"
        print(f"  {name}: waited {delay:.3f} s ({source})")
    print(f"done in {time.monotonic() - started:.2f} s")
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
