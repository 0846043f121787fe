"""Tests for the session reporter: batching, overflow, retries, drain, HTTP, classification."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
import structlog

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import retry
from resilience.telemetry import HttpBackend, Reporter, env_enabled, is_user_error, set_enabled
from resilience.testing import FakeClock


class Sink:
    """A backend that records batches, failing the first *failures* sends."""

    def __init__(self, failures=0):
        self.failures = failures
        self.batches = []
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.attempts += 1
            if self.failures:
                self.failures -= 1
                raise ConnectionError("backend down")
            self.batches.append(batch)

    def events(self):
        return [e for b in self.batches for e in b.events]

    def names(self):
        return [e.get("event_name", e["event"]) for e in self.events()]


@pytest.fixture(name="make")
def _make():
    """Build reporters with a fake clock (retry waits are instant) and close them all after."""
    made = []

    def make(backend, **kwargs):
        kwargs.setdefault("clock", FakeClock())
        kwargs.setdefault("enabled", True)
        reporter = Reporter(backend, **kwargs)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=5)
        assert reporter._thread is None or not reporter._thread.is_alive()


class TestBatching:
    def test_session_events(self, make):
        """A session starts and ends with its own events around the generic ones."""
        sink = Sink()
        reporter = make(sink, session_id="s-1")
        reporter.log("app.step", {"n": 1})
        assert reporter.close()
        assert ["SESSION_START", "app.step", "SESSION_END"] == sink.names()
        assert [0, 1, 2] == [e["event_session_index"] for e in sink.events()]
        assert {"s-1"} == {b.session_id for b in sink.batches}

    def test_batches_of_100(self, make):
        """105 events flush as a batch of 100 and a batch of 5 (after the session start)."""
        sink = Sink()
        reporter = make(sink, sessionless=True)
        for i in range(105):
            reporter.log("e", {"i": i})
        assert reporter.flush()
        assert [100, 5] == [len(b.events) for b in sink.batches]
        assert list(range(105)) == [e["event_data"]["i"] for e in sink.events()]

    def test_sessionless(self, make):
        """Session-less reporters have a synthetic id and no session events."""
        sink = Sink()
        reporter = make(sink, sessionless=True)
        reporter.log("x")
        reporter.close()
        assert ["x"] == sink.names()
        assert reporter.session_id.startswith("sessionless-")

    def test_periodic_flush(self, make):
        """The thread flushes on its own every flush_interval (a short one here)."""
        sink = Sink()
        done = threading.Event()
        reporter = make(lambda b: (sink(b), done.set()), sessionless=True, flush_interval=0.005)
        reporter.log("tick")
        assert done.wait(2.0)
        assert ["tick"] == sink.names()

    def test_secrets_redacted(self, make):
        """Sensitive data never reaches the backend."""
        sink = Sink()
        reporter = make(sink, sessionless=True, sensitive=["tenant"])
        reporter.log("call", {"headers": {"Authorization": "Bearer x"}, "tenant": "acme", "ok": 1})
        reporter.flush()
        data = sink.events()[0]["event_data"]
        assert {"headers": {"Authorization": "[REDACTED]"}, "tenant": "[REDACTED]", "ok": 1} == data


class TestFailures:
    def test_recovering_backend_loses_nothing(self, make):
        """A backend failing twice then recovering receives every event once."""
        sink = Sink(failures=2)
        clock = FakeClock()
        reporter = make(sink, clock=clock, sessionless=True)
        for i in range(10):
            reporter.log("e", {"i": i})
        assert reporter.flush()
        assert list(range(10)) == [e["event_data"]["i"] for e in sink.events()]
        assert 2 == len(clock.sleeps)
        stats = reporter.stats
        assert (10, 10, 0, 2) == (stats.accepted, stats.sent, stats.failed, stats.send_errors)

    def test_dead_backend_drops_and_counts(self, make):
        """After the retries, a batch is dropped and counted, and later batches go on."""
        sink = Sink(failures=4)  # 1 try + 3 retries
        reporter = make(sink, sessionless=True)
        reporter.log("lost")
        assert reporter.flush()
        reporter.log("kept")
        assert reporter.flush()
        assert ["kept"] == sink.names()
        assert (1, 1) == (reporter.stats.failed, reporter.stats.sent)


class TestQueue:
    @settings(max_examples=30, deadline=None)
    @given(
        max_queue=st.integers(1, 50),
        calls=st.lists(st.integers(0, 3), max_size=40),
    )
    def test_overflow_counted_exactly(self, max_queue, calls):
        """Nothing is lost silently: accepted + overflow equals what was offered, all accepted arrive."""
        sink = Sink()
        reporter = Reporter(
            sink,
            sessionless=True,
            max_queue=max_queue,
            batch_size=10_000,
            flush_interval=3600,
            clock=FakeClock(),
            enabled=True,
        )
        try:
            offered = sum(calls)
            with structlog.testing.capture_logs():
                for size in calls:  # the thread waits an hour, so the queue only fills
                    reporter._put([{"event": "GENERIC_EVENT", "n": i} for i in range(size)])
            stats = reporter.stats
            assert offered == stats.accepted + stats.overflow
            assert stats.queued <= max_queue
            reporter.close(timeout=5)
            notices = [
                e for e in sink.events() if e.get("event_name") == "resilience.telemetry.dropped"
            ]
            assert stats.accepted == len(sink.events()) - len(notices)
            assert stats.overflow == sum(b.dropped for b in sink.batches)
            assert stats.overflow == sum(e["event_data"]["count"] for e in notices)
        finally:
            reporter.close(timeout=5)

    def test_full_queue_never_blocks(self, make):
        """With the backend stuck, log() returns False at once when the queue is full."""
        release = threading.Event()
        sink = Sink()
        reporter = make(
            lambda b: (release.wait(5), sink(b)), sessionless=True, max_queue=5, batch_size=5
        )
        try:
            with structlog.testing.capture_logs() as logs:
                results = [reporter.log("e") for _ in range(20)]
        finally:
            release.set()
        assert results.count(True) <= 10  # 5 queued + at most one batch of 5 in flight
        assert 20 == reporter.stats.accepted + reporter.stats.overflow
        assert logs
        assert {"resilience.telemetry.dropped"} == {x["event"] for x in logs}
        assert reporter.flush()
        assert reporter.stats.overflow == sum(b.dropped for b in sink.batches)


class TestDrain:
    def test_close_drains_sync(self, make):
        """close() sends everything queued before returning."""
        sink = Sink()
        reporter = make(sink, sessionless=True, flush_interval=3600)
        for _ in range(250):
            reporter.log("e")
        assert reporter.close(timeout=5)
        assert 250 == len(sink.events())
        assert not reporter.log("after")

    @pytest.mark.anyio
    async def test_close_drains_async(self, make):
        """aclose() drains from async code without blocking the loop."""
        sink = Sink(failures=1)
        reporter = make(sink, flush_interval=3600)
        for _ in range(30):
            reporter.log("e")
        assert await reporter.aflush()
        assert await reporter.aclose()
        assert 32 == len(sink.events())

    def test_fatal_exception_ends_session(self, make):
        """A fatal exception is queued with the session's end and drained."""
        sink = Sink()
        reporter = make(sink)
        with pytest.raises(RuntimeError), reporter.capture_exceptions(fatal=True):
            raise RuntimeError("crash")
        assert ["SESSION_START", "UNHANDLED_EXCEPTION", "SESSION_END"] == sink.names()
        event = sink.events()[1]
        assert ("RuntimeError", "crash") == (event["error_type"], event["error_message"])
        assert "raise RuntimeError" in event["traceback"]


class APIError(Exception):
    def __init__(self, status_code, body=None):
        super().__init__(f"status {status_code}")
        self.status_code = status_code
        self.body = body


class TestUserErrors:
    @pytest.mark.parametrize(
        ("code", "user"),
        [(400, True), (404, True), (409, True), (408, False), (429, False), (500, False)],
    )
    def test_status(self, code, user):
        """4xx other than 408 and 429 are the user's."""
        assert user is is_user_error(APIError(code))

    def test_cause_chain_and_cycle(self):
        """The cause chain is walked, and a cycle ends the walk."""
        outer = ValueError("wrapped")
        outer.__cause__ = APIError(409, body="conflict")
        assert is_user_error(outer)
        a, b = ValueError("a"), ValueError("b")
        a.__context__, b.__context__ = b, a
        assert not is_user_error(a)

    def test_reported_as_user_error(self, make):
        """A user error is reported as a warning generic event with status and body."""
        sink = Sink()
        reporter = make(sink, sessionless=True)
        try:
            raise ValueError("bad") from APIError(422, body="invalid")
        except ValueError as exc:
            reporter.log_exception(exc)
        reporter.flush()
        event = sink.events()[0]
        assert ("user_error", "WARNING") == (event["event_name"], event["severity"])
        assert {
            "error_type": "ValueError",
            "message": "bad",
            "status_code": 422,
            "body": "invalid",
        } == event["event_data"]


class TestToggle:
    @pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON"])
    def test_env_on(self, value):
        """The allowlist turns telemetry on."""
        assert env_enabled({"RESILIENCE_TELEMETRY": value})

    @pytest.mark.parametrize("value", ["0", "false", "no", "off", "", "random"])
    def test_env_off(self, value):
        """Anything else turns it off; unset means on."""
        assert not env_enabled({"RESILIENCE_TELEMETRY": value})
        assert env_enabled({})

    def test_env_disables_reporter(self, monkeypatch):
        """With RESILIENCE_TELEMETRY=0 a reporter starts no thread and queues nothing."""
        monkeypatch.setenv("RESILIENCE_TELEMETRY", "0")
        reporter = Reporter(Sink())
        assert reporter._thread is None
        assert not reporter.log("x")
        assert reporter.close()

    def test_set_enabled(self, make):
        """set_enabled(False) stops queueing."""
        reporter = make(Sink(), sessionless=True)
        set_enabled(False)
        assert not reporter.log("x")


class TestForwarding:
    def test_retry_events_in_batches(self, make, clock):
        """Bus events under the forwarded prefix arrive in batches, redacted and JSON-ready."""
        sink = Sink()
        reporter = make(sink, sessionless=True, forward="resilience.retry.")
        calls = []

        @retry(attempts=3)
        def f():
            calls.append(1)
            if len(calls) < 2:
                raise OSError("token=abc")
            return 1

        f()
        reporter.flush()
        names = sink.names()
        assert "resilience.retry.retry" in names
        retry_event = next(e for e in sink.events() if e["event_name"] == "resilience.retry.retry")
        json.dumps(retry_event)
        assert "OSError: token=[REDACTED]" == retry_event["event_data"]["metadata"]["outcome"]


class TestHttpBackend:
    def test_posts_json_to_local_server(self, make):
        """The HTTP backend POSTs each batch as JSON; a 500 is retried."""
        received = []
        statuses = [500]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                status = statuses.pop() if statuses else 200
                if status == 200:
                    received.append(json.loads(body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/telemetry"
            reporter = make(HttpBackend(url, timeout=2.0), session_id="http-1")
            reporter.log("hello", {"n": 1})
            assert reporter.close(timeout=5)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
        events = [e for batch in received for e in batch["events"]]
        assert ["SESSION_START", "GENERIC_EVENT", "SESSION_END"] == [e["event"] for e in events]
        assert {"http-1"} == {batch["session_id"] for batch in received}

    def test_bad_url(self):
        """Only http and https URLs are accepted."""
        with pytest.raises(ValueError, match="url"):
            HttpBackend("ftp://x")
