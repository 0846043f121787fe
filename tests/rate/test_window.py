"""Tests for shared backoff windows: ``backoff_window(key)`` and its memory backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from resilience import BackoffWindow, backoff_window
from resilience.stores import MemoryStore
from resilience.testing import FakeClock, capture_events


class ExtendingClock(FakeClock):
    """A fake clock that extends a window once, during the first sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.window: BackoffWindow | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.window is not None:
            window, self.window = self.window, None
            window.set(4.0)


class TestBackoffWindow:
    def test_set_remaining_clear(self, clock: FakeClock) -> None:
        """set opens the window, remaining counts down, clear closes it."""
        window = backoff_window("k")
        assert 0.0 == window.remaining()
        assert not window.is_open
        assert 5.0 == window.set(5.0)
        clock.advance(2.0)
        assert 3.0 == window.remaining()
        assert window.is_open
        window.clear()
        assert 0.0 == window.remaining()

    def test_setting_never_shortens_an_open_window(self, clock: FakeClock) -> None:
        """A shorter set keeps the later end; a longer one extends it."""
        window = backoff_window("k")
        window.set(10.0)
        assert 10.0 == window.set(1.0)
        assert 20.0 == window.set(timedelta(seconds=20))

    def test_closes_exactly_at_its_end(self, clock: FakeClock) -> None:
        """At now == end there is no backoff (strict comparison)."""
        window = backoff_window("k")
        window.set(2.0)
        clock.advance(2.0)
        assert 0.0 == window.remaining()

    def test_same_key_same_window_per_store(self, clock: FakeClock) -> None:
        """backoff_window(key) shares state per key and store; other stores are apart."""
        backoff_window("a").set(3.0)
        assert 3.0 == backoff_window("a").remaining()
        assert 0.0 == backoff_window("b").remaining()
        assert 0.0 == backoff_window("a", store=MemoryStore()).remaining()

    def test_wait_rechecks_after_an_extension(self) -> None:
        """wait() sleeps the remaining time and sleeps again if the window was extended meanwhile."""
        clock = ExtendingClock()
        window = backoff_window("k", clock=clock)
        window.set(2.0)
        clock.window = window
        assert 6.0 == window.wait()
        assert [2.0, 4.0] == clock.sleeps

    @pytest.mark.anyio
    async def test_wait_async(self, clock: FakeClock) -> None:
        """wait_async() suspends until the window ends."""
        window = backoff_window("k")
        window.set(3.0)
        assert 3.0 == await window.wait_async()
        assert 3.0 == clock.monotonic()

    def test_event_and_validation(self, clock: FakeClock) -> None:
        """set emits resilience.window.set; a negative duration or non-string key is refused."""
        with capture_events("resilience.window") as events:
            backoff_window("k").set(1.5)
        assert 1.5 == events[0].measurements["seconds"]
        assert "k" == events[0].metadata["key"]
        with pytest.raises(ValueError, match="seconds"):
            backoff_window("k").set(-1)
        with pytest.raises(TypeError, match="key"):
            backoff_window(3)  # type: ignore[arg-type]
        assert "remaining=1.500s" in repr(backoff_window("k"))
