"""
The reporter under a misbehaving backend: ``close(timeout)`` and ``flush(timeout)`` keep
their time limit (to 10%) whatever the backend does, and ``accepted == sent + failed +
queued`` holds at every moment, watched from another thread while batches fail and retry.
"""

from __future__ import annotations

import threading
import time

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.telemetry import Batch, Reporter
from resilience.testing import FakeClock


TIMEOUT = 0.5  # 10% of it (50 ms) absorbs a busy machine's scheduling delays


class Hanging:
    """A backend that blocks until released (a server that accepted and never answered)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, batch: Batch) -> None:
        self.calls += 1
        self.release.wait()


def _raising(batch: Batch) -> None:
    raise ConnectionError("backend down")


def _exiting(batch: Batch) -> None:
    raise SystemExit(3)  # a backend that misbehaves badly must not kill the accounting


@pytest.fixture(name="hanging")
def _hanging() -> Iterator[Hanging]:
    backend = Hanging()
    yield backend
    backend.release.set()


def _timed(call: Callable[[], bool]) -> tuple[bool, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


class TestTimeLimits:
    def test_close_with_a_hanging_backend(self, hanging: Hanging) -> None:
        """close(0.5) returns False within 0.5 s (+10%) while the backend hangs."""
        reporter = Reporter(hanging, enabled=True, clock=FakeClock(), flush_interval=0.01)
        reporter.log("e", {"n": 1})
        done, elapsed = _timed(lambda: reporter.close(timeout=TIMEOUT))
        assert not done
        assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT * 1.1

    def test_flush_with_a_hanging_backend(self, hanging: Hanging) -> None:
        """flush(0.5) returns False within 0.5 s (+10%) while the backend hangs."""
        reporter = Reporter(hanging, enabled=True, clock=FakeClock(), sessionless=True)
        reporter.log("e", {"n": 1})
        done, elapsed = _timed(lambda: reporter.flush(timeout=TIMEOUT))
        assert not done
        assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT * 1.1
        hanging.release.set()
        assert reporter.close(timeout=5)

    def test_close_while_retrying_a_down_backend(self) -> None:
        """close(0.5) with the backend down and real retry waits of 1 s keeps its limit."""
        reporter = Reporter(_raising, enabled=True, retries=5)  # the real clock: 0.5, 1, 2 s...
        reporter.log("e", {"n": 1})
        done, elapsed = _timed(lambda: reporter.close(timeout=TIMEOUT))
        assert not done
        assert elapsed <= TIMEOUT * 1.1

    def test_close_with_a_backend_raising_system_exit(self) -> None:
        """A backend raising SystemExit is a failed send: the reporter drains and closes."""
        reporter = Reporter(_exiting, enabled=True, clock=FakeClock(), retries=1)
        reporter.log("e", {"n": 1})
        done, elapsed = _timed(lambda: reporter.close(timeout=TIMEOUT))
        assert done
        assert elapsed <= TIMEOUT * 1.1
        stats = reporter.stats
        assert stats.accepted == stats.failed
        assert 0 == stats.queued


class Misbehaving:
    """A backend acting out a script: succeed, raise, or hold the batch a moment."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls = 0
        self.lock = threading.Lock()
        self.pause = threading.Event()

    def __call__(self, batch: Batch) -> Any:
        with self.lock:
            action = self.script[self.calls % len(self.script)]
            self.calls += 1
        if action == "raise":
            raise ConnectionError("no")
        if action == "hold":
            self.pause.wait(0.002)  # a slow answer: the batch is in flight meanwhile
        if action == "garbage":
            return object()
        return None


def _check(reporter: Reporter, broken: list[str]) -> None:
    stats = reporter.stats
    if stats.accepted != stats.sent + stats.failed + stats.queued:
        broken.append(repr(stats))


@settings(max_examples=25, deadline=None)
@given(
    script=st.lists(st.sampled_from(["ok", "raise", "hold", "garbage"]), min_size=1, max_size=6),
    events=st.integers(min_value=1, max_value=60),
    batch_size=st.integers(min_value=1, max_value=8),
    retries=st.integers(min_value=0, max_value=3),
    max_queue=st.integers(min_value=1, max_value=40),
)
def test_stats_add_up_at_every_moment(
    script: list[str], events: int, batch_size: int, retries: int, max_queue: int
) -> None:
    """Watched from another thread, accepted == sent + failed + queued never breaks."""
    backend = Misbehaving(script)
    reporter = Reporter(
        backend,
        enabled=True,
        clock=FakeClock(),
        batch_size=batch_size,
        retries=retries,
        max_queue=max_queue,
        flush_interval=0.001,
    )
    broken: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            _check(reporter, broken)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(events):
            reporter.log("e", {"i": i})
            _check(reporter, broken)
        flushed = reporter.flush(timeout=5)
        _check(reporter, broken)
        assert reporter.close(timeout=5)
    finally:
        stop.set()
        watcher.join()
    assert [] == broken
    stats = reporter.stats
    assert flushed
    assert 0 == stats.queued
    assert stats.accepted == stats.sent + stats.failed
    assert stats.accepted + stats.overflow >= events  # every log() was accepted or counted


def test_exit_drain_shares_one_deadline(hanging: Hanging) -> None:
    """At interpreter exit, three hanging reporters take the exit timeout once, not thrice."""
    from resilience.telemetry._reporter import _close_all

    reporters = [Reporter(hanging, enabled=True, clock=FakeClock()) for _ in range(3)]
    for reporter in reporters:
        reporter.log("e", {"n": 1})
    done, elapsed = _timed(lambda: _close_all(TIMEOUT) or True)
    assert done
    assert elapsed <= TIMEOUT * 1.1
