"""
The dashboard's server: one page, one JSON snapshot, one server-sent-events stream.

A publisher thread reads the snapshot (the store's, plus the rolling metrics) at most once
per *interval* (less often when one read takes more than 1% of that: a huge store) and
only while a page is connected, so an application with nobody watching
pays nothing but the metrics' event handler. Every connected page gets the same encoded
frame: N pages cost one snapshot a second, not N. Request threads only wait and write.

Routes: ``/`` the page, ``/dashboard.js`` its script, ``/snapshot.json`` one snapshot,
``/events`` the stream (``data: <snapshot JSON>`` frames; a comment every 15 s keeps
proxies from closing it). Only GET and HEAD; a Host header that is not the bound address
or ``localhost`` is refused (DNS rebinding), and every response forbids framing and
sniffing.
"""

from __future__ import annotations

import json
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import TYPE_CHECKING, Any, ClassVar, Final

from resilience._errors import StoreUnavailableError
from resilience._snapshot import snapshot
from resilience._validate import check_int, duration
from resilience.telemetry._redact import scrub


if TYPE_CHECKING:
    from types import TracebackType

    from resilience.telemetry._rolling import RollingMetrics


__all__ = ["Dashboard", "serve"]

_KEEPALIVE: Final = 15.0
_BUDGET: Final = 150  # seconds of waiting per second of CPU a frame took: under 1%
_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> bytes:
    return files("resilience.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    """
    A running dashboard; ``stop()`` (or leaving ``with``) shuts it down.

    Attributes:
        url: Where the page is, such as ``http://127.0.0.1:8321/``.
        host: The address it is bound to.
        port: The port it listens on (the one chosen when asked for port 0).
        frames: Snapshots read and sent so far (one per *interval* while pages listen).
        cpu_seconds: CPU time the page's threads spent reading, encoding and sending
            frames: what the page costs the application (``cpu_share`` per second).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        store: Any,
        metrics: RollingMetrics | None,
        host: str,
        port: int,
        interval: float,
        title: str,
        owns_metrics: bool = False,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self._owns_metrics = owns_metrics
        self.interval = interval
        self.title = title
        self.frames = 0
        self.cpu_seconds = 0.0
        self.started = time.monotonic()
        self._frame = b""
        self._version = 0
        self._clients = 0
        self._paused = False
        self._stopped = threading.Event()
        # One lock, two conditions: stream writers wait for a new frame (``_changed``), the
        # publisher for a page to listen or a pause to end (``_wake``), so a page coming,
        # going or pausing never wakes a writer into sending a needless keep-alive.
        lock = threading.Lock()
        self._changed = threading.Condition(lock)
        self._wake = threading.Condition(lock)
        self._server = _Server((host, port), _Handler)
        self._server.dashboard = self
        self.host: str = host
        self.port: int = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="resilience-dashboard"),
            threading.Thread(target=self._publish, name="resilience-dashboard-publisher"),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    # -- frames -------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        """Return the current snapshot as the page sees it (redacted plain data)."""
        try:
            data = snapshot(self.store, metrics=self.metrics).to_dict()
        except StoreUnavailableError as error:
            data = {"error": scrub(str(error)), "taken_at": time.time()}
        data["title"] = scrub(self.title)
        data["interval"] = self.interval
        return data

    def _publish(self) -> None:
        """Encode a frame every *interval* while a page is connected (and not paused)."""
        while not self._stopped.is_set():
            with self._wake:
                while (not self._clients or self._paused) and not self._stopped.is_set():
                    self._wake.wait(_KEEPALIVE)
            if self._stopped.is_set():
                return
            spent = self._frame_once()
            # A store so large that a frame costs more than 1% of the interval is shown less
            # often, so the page never takes more than 1% of a core from the application.
            self._stopped.wait(max(self.interval, spent * _BUDGET))

    def _frame_once(self) -> float:
        """Read, encode and hand every stream one frame; return the CPU seconds it took."""
        spent = time.thread_time()
        frame = json.dumps(self.read(), separators=(",", ":")).encode()
        spent = time.thread_time() - spent
        with self._changed:
            self._frame = frame
            self._version += 1
            self.frames += 1
            self.cpu_seconds += spent
            self._changed.notify_all()
        return spent

    def _next(self, seen: int) -> tuple[int, bytes | None]:
        """Wait for a frame newer than *seen*; None after the keep-alive time or a stop."""
        deadline = time.monotonic() + _KEEPALIVE
        with self._changed:
            while self._version == seen and not self._stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if self._version == seen or self._stopped.is_set():
                return seen, None
            return self._version, self._frame

    def _spent(self, seconds: float) -> None:
        with self._changed:
            self.cpu_seconds += seconds

    @property
    def cpu_share(self) -> float:
        """The CPU the page's threads used since it started, as a share of one core's time."""
        return self.cpu_seconds / max(time.monotonic() - self.started, 1e-9)

    def _join(self, delta: int) -> None:
        with self._wake:
            self._clients += delta
            self._wake.notify_all()

    @property
    def clients(self) -> int:
        """How many pages (event streams) are connected now."""
        return self._clients

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) reading snapshots while pages stay connected (for benchmarks)."""
        with self._wake:
            self._paused = paused
            self._wake.notify_all()

    # -- lifetime -----------------------------------------------------------------------

    def stop(self) -> None:
        """Close every stream and stop serving (twice is harmless)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._changed:
            self._changed.notify_all()
            self._wake.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._owns_metrics and self.metrics is not None:
            self.metrics.detach()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else f"{self._clients} page(s)"
        return f"<Dashboard {self.url} {state}>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    dashboard: Dashboard


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "resilience-dashboard"
    sys_version = ""
    assets: ClassVar[dict[str, bytes]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: an operator's page must not fill the application's stderr."""

    def _allowed_host(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if host.count(":") == 1 else host
        bound = self.server.dashboard.host.lower()
        return name in {bound, "localhost", "127.0.0.1", "::1"}

    def _send(self, status: int, body: bytes, kind: str, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        """Answer like GET, without the body."""
        self._route(head=True)

    def do_GET(self) -> None:
        """Serve the page, its script, a snapshot, or the event stream."""
        self._route(head=False)

    def _route(self, head: bool) -> None:
        if not self._allowed_host():
            self._send(421, b"unexpected Host header\n", "text/plain; charset=utf-8", head)
            return
        path = self.path.partition("?")[0]
        static = _STATIC.get(path)
        if static is not None:
            name, kind = static
            body = self.assets.get(name)
            if body is None:
                body = self.assets[name] = _asset(name)
            self._send(200, body, kind, head)
        elif path == "/snapshot.json":
            body = json.dumps(self.server.dashboard.read()).encode()
            self._send(200, body, "application/json", head)
        elif path == "/events" and not head:
            self._stream()
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)

    def _refuse(self) -> None:
        self._send(405, b"read-only\n", "text/plain; charset=utf-8")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815 - http.server's names

    def _stream(self) -> None:
        dashboard = self.server.dashboard
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        dashboard._join(1)
        seen = 0
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while not dashboard._stopped.is_set():
                seen, frame = dashboard._next(seen)
                if dashboard._stopped.is_set():
                    break  # closing: nothing more to say
                self.wfile.write(
                    b": keep-alive\n\n" if frame is None else b"data: " + frame + b"\n\n"
                )
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the page went away
        finally:
            dashboard._join(-1)


def serve(
    port: int = 8321,
    *,
    host: str = "127.0.0.1",
    store: Any = None,
    metrics: RollingMetrics | bool = True,
    interval: float = 1.0,
    title: str = "resilience",
) -> Dashboard:
    """
    Serve the live page in a background thread and return at once.

    Args:
        port: The TCP port (0: any free one; read it from the result's ``port``).
        host: The address to bind. The default, 127.0.0.1, keeps the page on this machine;
            anything else exposes it unauthenticated, so put an authenticating reverse
            proxy in front.
        store: The store to show (default: this process's memory store).
        metrics: ``True`` (the default) counts this process's calls with a new
            ``RollingMetrics`` attached to the bus; pass your own, or ``False`` for none.
        interval: Seconds between updates of the page (>= 1.0: at most once a second).
        title: Shown as the page's heading.

    Raises:
        OSError: If the port cannot be bound.

    .. versionadded:: 0.1.0
    """
    chosen: int = check_int("serve", "port", port, low=0, high=65535)  # type: ignore[assignment]
    every = duration("serve", "interval", interval, strict=True) or 1.0
    if every < 1.0:
        msg = f"serve.interval must be at least 1.0 s (at most one update a second), got {every!r}"
        raise ValueError(msg)
    if not isinstance(host, str):
        msg = f"serve.host must be a string such as '127.0.0.1', got {type(host).__name__}"
        raise TypeError(msg)
    if not host:
        msg = "serve.host must be an address such as '127.0.0.1', got ''"
        raise ValueError(msg)
    rolling: RollingMetrics | None
    owns = metrics is True
    if metrics is True:
        from resilience.telemetry._rolling import RollingMetrics  # noqa: PLC0415

        rolling = RollingMetrics().attach()
    elif metrics is False or metrics is None:
        rolling = None
    else:
        rolling = metrics
    return Dashboard(store, rolling, host, chosen, every, title, owns)
