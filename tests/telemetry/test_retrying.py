"""Tests for @retry's attempt events and its progress tracker."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from resilience import Backoff, retry
from resilience.telemetry import attach_structlog
from resilience.telemetry._retrying import RetryProgress, describe
from resilience.testing import capture_events


def flaky(failures, exc=OSError):
    calls = []

    def f():
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"fail {len(calls)}")
        return "ok"

    return f, calls


class TestAttemptEvents:
    def test_attempts_numbered(self, clock):
        """Each attempt emits start and stop with its number; retry carries delay and reason."""
        f, _ = flaky(2)
        decorated = retry(attempts=5)(f)
        with capture_events("resilience.retry") as events:
            assert "ok" == decorated()
        stops = [e for e in events if e.name == "resilience.retry.attempt.stop"]
        assert [1, 2, 3] == [e.metadata["attempt"] for e in stops]
        assert ["raised", "raised", "returned"] == [e.metadata["outcome"] for e in stops]
        retries = [e for e in events if e.name == "resilience.retry.retry"]
        assert ["OSError: fail 1", "OSError: fail 2"] == [e.metadata["reason"] for e in retries]
        assert all(e.metadata["server_delay"] is False for e in retries)
        assert clock.sleeps == [e.measurements["delay"] for e in retries]

    def test_listener_attached_later(self, clock):
        """Decorated before anyone listens, a call still emits attempt events once someone does."""
        f, _ = flaky(1)
        decorated = retry(attempts=3)(f)
        assert "ok" == decorated()
        with capture_events("resilience.retry.attempt") as events:
            decorated()
        assert ["resilience.retry.attempt.start", "resilience.retry.attempt.stop"] == [
            e.name for e in events
        ]

    def test_server_delay(self, clock):
        """A Retry-After delay is flagged as coming from the server."""

        class Throttled(Exception):
            headers = {"Retry-After": "3"}

        f, _ = flaky(1, Throttled)
        with capture_events("resilience.retry.retry") as events:
            retry(attempts=2)(f)()
        assert events[0].metadata["server_delay"] is True
        assert 3.0 == events[0].measurements["delay"]

    @pytest.mark.anyio
    async def test_async(self, clock):
        """Async retries emit the same numbered attempts."""
        calls = []

        @retry(attempts=4)
        async def g():
            calls.append(1)
            await asyncio.sleep(0)
            if len(calls) < 3:
                raise OSError("x")
            return 1

        with capture_events("resilience.retry.attempt.stop") as events:
            assert 1 == await g()
        assert [1, 2, 3] == [e.metadata["attempt"] for e in events]

    def test_nested_retries_count_separately(self, clock):
        """An inner retried call keeps its own attempt numbers."""
        inner_f, _ = flaky(1)
        inner = retry(attempts=3, name="inner")(inner_f)
        outer_calls = []

        @retry(attempts=3, name="outer")
        def outer():
            outer_calls.append(1)
            inner()
            if len(outer_calls) < 2:
                raise OSError("outer")

        with capture_events("resilience.retry.attempt.start") as events:
            outer()
        pairs = [(e.metadata["name"], e.metadata["attempt"]) for e in events]
        assert [("outer", 1), ("inner", 1), ("inner", 2), ("outer", 2), ("inner", 1)] == pairs


class TestProgress:
    def test_interval_and_grouping(self):
        """At most one line per interval, with errors grouped and counted, most frequent first."""

        class Owner:
            name = "f"

        tracker = RetryProgress(Owner())
        with (
            capture_events("resilience.retry.progress") as events,
            structlog.testing.capture_logs() as logs,
        ):
            tracker.enter(0.0)
            tracker.failed(OSError("a"), 0.5)
            tracker.failed(OSError("a"), 1.0)
            tracker.failed(KeyError("b"), 1.9)
            tracker.sleeping()
            tracker.awake(2.0)  # 2 s after the spell began: a line
            tracker.failed(OSError("a"), 2.5)  # too soon for another
            tracker.leave(4.1)
        assert 2 == len(events)
        first, second = events
        assert {"waiting": 0, "running": 1, "completed": 0, "failures": 3} == first.measurements
        assert [("OSError: a", 2), ("KeyError: 'b'", 1)] == first.metadata["errors"]
        assert [("OSError: a", 1)] == second.metadata["errors"]
        assert 1 == second.measurements["completed"]
        assert ["resilience.retry.progress"] * 2 == [x["event"] for x in logs]

    def test_from_retry_loop(self, clock):
        """A long retry loop reports progress while it waits, and counts the failures."""
        f, _ = flaky(6)
        decorated = retry(attempts=10, backoff=Backoff(base=1.0, max=1.0, jitter="none"))(f)
        with (
            capture_events("resilience.retry.progress") as events,
            structlog.testing.capture_logs(),
        ):
            assert "ok" == decorated()
        assert 2 <= len(events) <= 4  # 6 s of waiting, one line per 2 s at most
        assert sum(n for e in events for _, n in e.metadata["errors"]) <= 6
        assert all(
            e.metadata["errors"][0][0].startswith("OSError") for e in events if e.metadata["errors"]
        )

    def test_batches_group_exactly(self):
        """Past a queue's worth of failures, groups, counts and "other" stay exact."""

        class Owner:
            name = "f"

        class Unhashable(Exception):
            pass

        tracker = RetryProgress(Owner())
        same = OSError("same")  # the same args object again and again: the cached group
        outcomes = [same] * 100 + [OSError("same")] * 30 + [503, 503]
        outcomes += [same, Unhashable(["x"]), Unhashable(["x"])]
        outcomes += [KeyError(n) for n in range(60)]  # past 50 kinds: "other"
        with capture_events("resilience.retry.progress") as events:
            tracker.enter(0.0)
            for n, outcome in enumerate(outcomes):
                tracker.failed(outcome, n / 1000)
            assert (0, 1, 0, len(outcomes)) == (
                tracker.waiting,
                tracker.running,
                tracker.completed,
                tracker.failures,
            )
            tracker.leave(5.0)
        (line,) = events
        errors = dict(line.metadata["errors"])
        assert 131 == errors["OSError: same"]
        assert 2 == errors["result 503"]
        assert 2 == errors["Unhashable: ['x']"]
        kinds = 50 - 3
        assert 60 - kinds == errors["other"]
        assert len(outcomes) == sum(errors.values())
        assert {"waiting": 0, "running": 0, "completed": 1} == {
            k: line.measurements[k] for k in ("waiting", "running", "completed")
        }

    def test_threads_count_exactly(self, clock):
        """Calls retrying on many threads at once are all counted, without a lock per step."""
        import threading

        errors = []

        calls = [0]  # shared by the threads: every third call succeeds, give or take

        def f():
            calls[0] += 1
            if calls[0] % 3:
                raise OSError("busy")
            return "ok"

        decorated = retry(attempts=None, backoff=Backoff(base=0))(f)

        def worker():
            try:
                for _ in range(300):
                    decorated()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [] == errors
        tracker = decorated._self_layers[0].tracker
        assert (0, 0) == (tracker.waiting, tracker.running)
        assert tracker.completed <= 8 * 300  # calls that succeeded at once never enter
        assert tracker.failures >= tracker.completed
        assert "waiting=0 running=0" in repr(tracker)

    def test_failures_freed_without_gc(self):
        """Queued failures are freed by reference counting once counted: no cycles."""
        import gc
        import weakref

        class Boom(Exception):
            pass

        raised = []

        def boom():
            exc = Boom()
            raised.append(weakref.ref(exc))
            return exc

        async def f():
            if len(raised) < 2:
                raise boom()  # no local here: the test adds no cycle of its own
            return "ok"

        decorated = retry(attempts=3, backoff=Backoff(base=0))(f)
        gc.disable()
        try:
            assert "ok" == asyncio.run(decorated())
            tracker = decorated._self_layers[0].tracker
            assert 2 == tracker.failures  # drains the queue
            assert [False, True] == [ref() is None for ref in raised]  # the first: exemplar
            with capture_events("resilience.retry.progress"):
                assert tracker.report_if_due(1e9)
            assert [None, None] == [ref() for ref in raised]
        finally:
            gc.enable()

    def test_describe(self):
        """Outcomes are described as Type: message, or result repr."""
        assert "ValueError: No error message" == describe(ValueError())
        assert "result 503" == describe(503)


class TestStructlogBridge:
    def test_retried_call_logged(self, clock):
        """attach_structlog writes each retry event as a line; give-up at warning."""
        f, _ = flaky(5)
        attach_structlog("resilience.retry.")
        with structlog.testing.capture_logs() as logs, pytest.raises(OSError):
            retry(attempts=2)(f)()
        names = [x["event"] for x in logs]
        assert "resilience.retry.retry" in names
        assert "warning" == logs[-1]["log_level"]
        assert "resilience.retry.give_up" == logs[-1]["event"]
