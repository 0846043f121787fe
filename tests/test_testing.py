"""resilience.testing: virtual time, captured events, reset, and the hypothesis strategies."""

from __future__ import annotations

import asyncio

from datetime import timedelta

import pytest

from freezegun import freeze_time
from hypothesis import given

import resilience

from resilience import Backoff, RetryPolicy, retry
from resilience._clock import current_clock, resolve
from resilience.telemetry import emit
from resilience.testing import (
    FakeClock,
    backoffs,
    capture_events,
    retry_policies,
    virtual_time,
)
from resilience.typing import Clock


class TestFakeClock:
    def test_sleep_advances_instantly(self):
        """sleep() moves virtual time and records the wait."""
        clock = FakeClock(start=100.0, wall=1_000.0)
        clock.sleep(600)
        assert (700.0, 1_600.0, [600]) == (clock.monotonic(), clock.time(), clock.sleeps)

    def test_is_a_clock(self):
        """FakeClock satisfies the Clock protocol."""
        assert isinstance(FakeClock(), Clock)

    def test_advance_rejects_negative(self):
        """Time never goes backwards."""
        with pytest.raises(ValueError, match="seconds must be >= 0"):
            FakeClock().advance(-1)

    @pytest.mark.anyio
    async def test_async_sleepers_wake_in_deadline_order(self):
        """Concurrent async sleepers wake in deadline order at their virtual deadlines."""
        clock = FakeClock()
        woke: list[tuple[str, float]] = []

        async def sleeper(name, seconds):
            await clock.asleep(seconds)
            woke.append((name, clock.monotonic()))

        await asyncio.gather(sleeper("c", 3), sleeper("a", 1), sleeper("b", 2))
        assert [("a", 1.0), ("b", 2.0), ("c", 3.0)] == woke

    @pytest.mark.anyio
    async def test_cancelled_sleeper_does_not_block(self):
        """A cancelled sleeper is skipped by the jumps."""
        clock = FakeClock()
        task = asyncio.create_task(clock.asleep(100))
        await asyncio.sleep(0)
        task.cancel()
        await clock.asleep(1)
        assert 1.0 == clock.monotonic()

    def test_ticks_freezegun(self):
        """With freezegun's tick, the frozen wall clock moves with virtual time."""
        with freeze_time("2026-01-01 00:00:00") as frozen:
            clock = FakeClock(tick=frozen.tick)
            clock.sleep(90)
            import datetime

            assert datetime.datetime(2026, 1, 1, 0, 1, 30) == datetime.datetime.now()
            assert (
                clock.time()
                == datetime.datetime(2026, 1, 1, 0, 1, 30, tzinfo=datetime.UTC).timestamp()
            )

    def test_ten_minutes_of_backoff_in_no_time(self):
        """A long schedule runs with no real waiting."""
        with virtual_time() as clock:
            calls = 0

            @retry(attempts=70, backoff=Backoff(jitter="none"))
            def flaky():
                nonlocal calls
                calls += 1
                if calls < 70:
                    raise OSError

            flaky()
        assert sum(clock.sleeps) > 600


class TestVirtualTime:
    def test_installs_and_restores(self):
        """virtual_time() installs a FakeClock as default and restores the previous one."""
        before = current_clock()
        with virtual_time() as clock:
            assert clock is current_clock()
        assert before is current_clock()

    def test_policy_clock_wins(self):
        """A policy's own clock is used over the default."""
        own = FakeClock()
        with virtual_time() as default:
            retry(RetryPolicy(clock=own, backoff=Backoff(jitter="none")))(_fails_once())()
        assert ([0.5], []) == (own.sleeps, default.sleeps)

    def test_window_opened_inside_is_gone_after(self):
        """A backoff window a scripted 429 opened in virtual time does not outlive the block."""
        with virtual_time():
            resilience.backoff_window("vt-stale").set(30.0)
            assert 30.0 == resilience.backoff_window("vt-stale").remaining()
        assert 0.0 == resilience.backoff_window("vt-stale").remaining()

    def test_breaker_and_pool_made_inside_are_forgotten(self):
        """A breaker opened and a pool filled inside the block start fresh after it."""

        @resilience.circuit_breaker(name="vt-breaker", failure_threshold=1)
        def boom():
            raise OSError

        with virtual_time():
            with pytest.raises(OSError):
                boom()
            assert "open" == resilience.get_circuit_breaker("vt-breaker").state
        assert "closed" == resilience.get_circuit_breaker("vt-breaker").state
        with pytest.raises(OSError):
            boom()  # called, not refused: the breaker was closed

    def test_handlers_and_switches_are_kept(self):
        """Only keyed state is reset: handlers and the testing mode stay as they were."""
        seen = []
        handle = resilience.telemetry.attach(seen.append, ["resilience.test.vt"])
        with resilience.testing.set_testing(True):
            with virtual_time():
                pass
            assert resilience.testing.is_testing()
        emit("resilience.test.vt.ping")
        handle.detach()
        assert ["resilience.test.vt.ping"] == [event.name for event in seen]

    @pytest.mark.anyio
    async def test_async_windows_do_not_leak(self):
        """The same holds when the block ran async code."""
        with virtual_time() as clock:
            window = resilience.backoff_window("vt-async")
            window.set(2.0)
            await window.wait_async()
            assert [2.0] == clock.sleeps
            window.set(7.0)
        assert 0.0 == resilience.backoff_window("vt-async").remaining()

    def test_resolve_reads_the_default_at_each_call(self):
        """The one clock lookup: a policy's own clock, else the default in force right now."""
        own = FakeClock()
        assert resolve(own) is own
        outside = resolve(None)
        with virtual_time() as clock:
            assert (resolve(None), resolve(own)) == (clock, own)
        assert resolve(None) is outside

    def test_nobody_reads_the_default_but_the_helper(self):
        """Every module resolves its clock through _clock (resolve, or DEFAULT on a hot path)."""
        from pathlib import Path

        root = Path(resilience.__file__).parent
        readers = sorted(
            str(path.relative_to(root))
            for path in root.rglob("*.py")
            if path.name != "_clock.py" and "_default.clock" in path.read_text()
        )
        assert readers == []


def _fails_once():
    state = {"n": 0}

    def f():
        state["n"] += 1
        if state["n"] == 1:
            raise OSError

    return f


class TestCaptureEvents:
    def test_captures_by_prefix(self):
        """capture_events collects only events with the given prefixes, while active."""
        with capture_events("resilience.a") as events:
            emit("resilience.a.x", {"n": 1})
            emit("resilience.b.y")
        emit("resilience.a.z")
        assert ["resilience.a.x"] == [e.name for e in events]
        assert {"n": 1} == events[0].measurements


class TestReset:
    def test_reset_restores_switches(self):
        """reset() turns testing mode and the off switch back to defaults."""
        from resilience.testing import is_testing, reset, set_testing

        set_testing(True)
        resilience.set_active(False)
        reset()
        assert (False, True) == (is_testing(), resilience.is_active())


class TestStrategies:
    @given(b=backoffs(decorrelated=True))
    def test_backoffs_are_valid(self, b):
        """Every generated Backoff is valid and has consistent bounds."""
        low, high = b.bounds(3)
        assert 0 <= low <= high <= b.max

    @given(p=retry_policies())
    def test_retry_policies_are_valid(self, p):
        """Every generated RetryPolicy survives a from_dict round trip."""
        assert p == RetryPolicy.from_dict(p.to_dict())


def test_timedelta_in_fake_tick():
    """tick receives timedeltas."""
    ticks: list[timedelta] = []
    FakeClock(tick=ticks.append).sleep(2)
    assert [timedelta(seconds=2)] == ticks
