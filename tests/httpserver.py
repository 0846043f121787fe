"""A real HTTP server on loopback for tests: /status/<code>?header=value answers as told."""

from __future__ import annotations

import threading
import time

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
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
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
