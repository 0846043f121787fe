"""
No secret leaves: a real structlog configuration, a reporter posting to a loopback HTTP
server and the OpenTelemetry SDK's in-memory exporter see every carrier of a credential
(URLs, headers, Bearer/Basic, name=value pairs, token shapes) in exception messages,
tracebacks, notes, chained causes and event metadata, on the success, retry and give-up
paths of sync and async calls; none of the secrets appears in any of their output.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import threading

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import structlog

from resilience import Backoff, retry, traced
from resilience.telemetry import HttpBackend, Reporter, attach_structlog, emit
from resilience.testing import FakeClock, virtual_time


pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience.telemetry.otel import attach_opentelemetry


#: Every secret carries "S3CRET" (or is a well-known shape) so a leak is easy to find.
SECRETS = [
    "alice:pw-S3CRET-userinfo",
    "S3CRET-apikey",
    "S3CRET-token",
    "S3CRET-access-token",
    "S3CRET-signature",
    "S3CRET-sig",
    "S3CRET-password-q",
    "S3CRET-secret-q",
    "S3CRET-key-q",
    "S3CRETbearerHEADER01",
    "dXNlcjpTM0NSRVQtYmFzaWM=",
    "S3CRET-cookie-1",
    "S3CRET-cookie-2",
    "S3CRET-setcookie",
    "S3CRETbearerAnywhere9",
    "S3CRET-pw-pair",
    "S3CRET-json-secret",
    "S3CRET-passphrase",
    "S3CRET-access-key",
    "S3CRET-jwt-pair",
    "S3CRET-private-key",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTM0NSRVQifQ.S3CRETjwtSignature",
    "sk-S3CRETopenai0123456789abcdef",
    "AKIAS3CRETAWSKEY0001",
    "ghp_S3CRETgithub0123456789abcdef",
    "xoxb-S3CRET-slack-0123456789",
    "S3CRET-header-pair",
    "S3CRET-note",
    "S3CRET-cause",
]

URL = (
    "https://alice:pw-S3CRET-userinfo@api.test/v1/items?api_key=S3CRET-apikey&token=S3CRET-token"
    "&access_token=S3CRET-access-token&signature=S3CRET-signature&sig=S3CRET-sig"
    "&password=S3CRET-password-q&secret=S3CRET-secret-q&key=S3CRET-key-q&page=2"
)
MESSAGE = (
    f"request to {URL} failed\n"
    "Authorization: Bearer S3CRETbearerHEADER01\n"
    "Proxy-Authorization: Basic dXNlcjpTM0NSRVQtYmFzaWM=\n"
    "Cookie: session=S3CRET-cookie-1; theme=S3CRET-cookie-2\n"
    "Set-Cookie: id=S3CRET-setcookie; Path=/; HttpOnly\n"
    "the server echoed Bearer S3CRETbearerAnywhere9 back; "
    'password=S3CRET-pw-pair {"client_secret": "S3CRET-json-secret"} '
    "passphrase: S3CRET-passphrase, X-Access-Key=S3CRET-access-key jwt=S3CRET-jwt-pair "
    "private-key='S3CRET-private-key' "
    "tokens seen: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTM0NSRVQifQ.S3CRETjwtSignature "
    "sk-S3CRETopenai0123456789abcdef AKIAS3CRETAWSKEY0001 ghp_S3CRETgithub0123456789abcdef "
    "xoxb-S3CRET-slack-0123456789"
)


class LeakyError(ConnectionError):
    """An error whose message, note, cause and attributes all carry secrets."""


def leaky_error() -> Exception:
    request = httpx.Request("GET", URL, headers={"Authorization": "Bearer S3CRET-header-pair"})
    response = httpx.Response(503, request=request, headers={"Retry-After": "1"})
    try:
        try:
            raise ValueError("upstream said password=S3CRET-cause")
        except ValueError as cause:
            raise LeakyError(MESSAGE) from cause
    except LeakyError as error:
        error.add_note("while calling with api_key=S3CRET-note")
        error.response = response  # type: ignore[attr-defined]
        error.request = request  # type: ignore[attr-defined]
        return error


@dataclass
class Loopback:
    """A real HTTP server on 127.0.0.1 that keeps every POSTed body."""

    url: str
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture(name="loopback")
def _loopback() -> Iterator[Loopback]:
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Loopback(f"http://127.0.0.1:{server.server_port}/telemetry", bodies)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Outputs:
    """Everything the three exits wrote."""

    log: io.StringIO
    exporter: InMemorySpanExporter
    loopback: Loopback
    reporter: Reporter

    def text(self) -> str:
        assert self.reporter.close(timeout=5)
        spans = [span.to_json() for span in self.exporter.get_finished_spans()]
        posted = [body.decode() for body in self.loopback.bodies]
        return "\n".join([self.log.getvalue(), *spans, *posted])


@pytest.fixture(name="outputs", params=["json", "keyvalue", "console"])
def _outputs(request: pytest.FixtureRequest, loopback: Loopback) -> Iterator[Outputs]:
    """structlog configured for real, a reporter on the loopback server, OTel in memory."""
    old = structlog.get_config()
    log = io.StringIO()
    renderer: Any = {
        "json": structlog.processors.JSONRenderer(),
        "keyvalue": structlog.processors.KeyValueRenderer(),
        "console": structlog.dev.ConsoleRenderer(colors=False),
    }[request.param]
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=log),
        cache_logger_on_first_use=False,
    )
    handle = attach_structlog(level="debug")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    adapter = attach_opentelemetry(tracer_provider=provider)
    reporter = Reporter(
        HttpBackend(loopback.url, timeout=2.0),
        forward="resilience.",
        clock=FakeClock(),
        enabled=True,
    )
    try:
        yield Outputs(log, exporter, loopback, reporter)
    finally:
        reporter.close(timeout=5)
        adapter.detach()
        provider.shutdown()
        handle.detach()
        structlog.configure(**old)


def assert_no_secret(text: str) -> None:
    if DUMP:
        DUMP[0].write(text)
    leaked = [secret for secret in SECRETS if secret in text]
    assert [] == leaked
    assert "S3CRET" not in text
    assert "[REDACTED]" in text
    assert "api.test/v1/items" in text  # the context around the secrets survives
    assert "page=2" in text


def _flaky(failures: int) -> Any:
    calls = []

    def work() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise leaky_error()
        return "ok"

    return work


def _aflaky(failures: int) -> Any:
    calls = []

    async def work() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise leaky_error()
        return "ok"

    return work


DUMP: list[Any] = []
FAST = Backoff(base=0.01, max=0.01, jitter="none")


class TestEveryExit:
    def test_sync_retry_then_success(self, outputs: Outputs) -> None:
        """Two failures retried, then a success: no secret in any output."""
        work = traced(name="leaky")(retry(attempts=3, backoff=FAST)(_flaky(2)))
        with virtual_time():
            assert "ok" == work()
        assert_no_secret(outputs.text())

    def test_sync_give_up(self, outputs: Outputs) -> None:
        """A give-up, then the error reported as unhandled (with its traceback)."""
        work = traced(name="leaky")(retry(attempts=2, backoff=FAST)(_flaky(5)))
        with virtual_time(), pytest.raises(LeakyError) as info:
            work()
        outputs.reporter.log_exception(info.value)
        assert_no_secret(outputs.text())

    def test_async_retry_then_success(self, outputs: Outputs) -> None:
        """The async path: retries then a success."""
        work = traced(name="leaky")(retry(attempts=3, backoff=FAST)(_aflaky(2)))
        with virtual_time():
            assert "ok" == asyncio.run(work())
        assert_no_secret(outputs.text())

    def test_async_give_up(self, outputs: Outputs) -> None:
        """The async path: a give-up, reported through capture_exceptions."""
        work = traced(name="leaky")(retry(attempts=2, backoff=FAST)(_aflaky(5)))
        with virtual_time(), pytest.raises(LeakyError):
            with outputs.reporter.capture_exceptions():
                asyncio.run(work())
        assert_no_secret(outputs.text())

    def test_success_with_secret_metadata(self, outputs: Outputs) -> None:
        """Users' own events and reporter logs carrying secrets in values and objects."""
        request = httpx.Request("GET", URL)
        emit(
            "resilience.app.call",
            {"n": 1.0},
            {"url": URL, "request": request, "detail": MESSAGE, "raw": MESSAGE.encode()},
        )
        outputs.reporter.log("app.step", {"url": URL, "headers": dict(request.headers)})
        work = traced(name="leaky")(lambda: "ok")
        assert "ok" == work()
        assert_no_secret(outputs.text())
