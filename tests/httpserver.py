"""
A real HTTP server on loopback for tests.

- ``GET /status/<code>?header=value`` answers as told; ``/sequence/<name>/503,200`` answers
  each status in turn; ``/slow/<seconds>`` waits first.
- Any method and path with an ``x-script: <name>`` header plays the steps the test put in
  ``server.scripts[name]`` (a list of ``Step``; the last one repeats), recording each
  request in ``server.seen[name]``. This is how the SDK imitations answer
  ``POST /v1/chat/completions``, ``POST /v1/messages`` or Tinker's endpoints.
"""

from __future__ import annotations

import json
import threading
import time

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Step:
    """One scripted answer: a status, headers, a JSON body, and a wait before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: object = None
    hang: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _scripted(self) -> bool:
        name = self.headers.get("x-script")
        if name is None:
            return False
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            seen = server.seen.setdefault(name, [])  # type: ignore[attr-defined]
            seen.append((self.command, urlsplit(self.path).path, dict(self.headers)))
            steps = server.scripts[name]  # type: ignore[attr-defined]
            n = len(seen)
        step = steps[min(n, len(steps)) - 1]
        if step.hang:
            time.sleep(step.hang)
        body = json.dumps(step.body if step.body is not None else {}).encode()
        try:
            self.send_response(step.status)
            self.send_header("content-type", "application/json")
            self.send_header("x-hit", str(n))
            for header, value in step.headers.items():
                self.send_header(header, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting (a read timeout under test)
        return True

    def do_POST(self) -> None:
        if not self._scripted():
            self.send_error(404)

    def do_GET(self) -> None:
        if self._scripted():
            return
        parts = urlsplit(self.path)
        segments = parts.path.strip("/").split("/")
        self.server.hits.append(parts.path)  # type: ignore[attr-defined]
        if segments[0] == "slow":
            time.sleep(float(segments[1]))
            segments = ["status", "200"]
        if segments[0] == "sequence":
            # /sequence/<name>/503,429,200: answers each status in turn, per name
            counters = self.server.counters  # type: ignore[attr-defined]
            statuses = segments[2].split(",")
            n = counters.get(segments[1], 0)
            counters[segments[1]] = n + 1
            segments = ["status", statuses[min(n, len(statuses) - 1)]]
        status = int(segments[1]) if segments[0] == "status" else 404
        body = f"status {status}".encode()
        self.send_response(status)
        for name, value in parse_qsl(parts.query):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """Run the server on 127.0.0.1 and a free port; yield its base URL and the server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.hits = []  # type: ignore[attr-defined]
    server.counters = {}  # type: ignore[attr-defined]
    server.scripts = {}  # type: ignore[attr-defined]
    server.seen = {}  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
