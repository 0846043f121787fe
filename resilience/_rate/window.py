"""
Shared backoff windows: one Retry-After makes every caller of a key wait until it ends.

A window is a single number, the monotonic time at which it ends (``-inf`` when cleared).
Setting one is a max-merge (the later end wins), so a short delay never shortens a long
one; checking one is a plain attribute read against the clock, with no lock. The backend
reads time itself, so a Redis backend can keep the end in server time.
"""

from __future__ import annotations

import math
import threading

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from resilience import _clock
from resilience._snapshot import LimiterSnapshot, epoch_of
from resilience._validate import duration
from resilience.stores._memory import DEFAULT_STORE
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from datetime import timedelta

    from resilience.typing import Clock


__all__ = ["BackoffWindow", "MemoryWindowBackend", "WindowBackend", "backoff_window"]


class WindowBackend(Protocol):
    """
    The state of one key's backoff window; each method is one atomic decision.

    .. versionadded:: 0.1.0
    """

    def extend(self, seconds: float) -> float:
        """Make the window last at least *seconds* from now; return the seconds it now has left."""
        ...

    def remaining(self) -> float:
        """Return the seconds until the window ends (0.0 when closed)."""
        ...

    def clear(self) -> None:
        """Close the window at once."""
        ...

    def snapshot(self, key: str) -> LimiterSnapshot:
        """Return the operator's view of the window of *key* (no limiter), changing nothing."""
        ...


class MemoryWindowBackend:
    """A window in this process: the end time as a float, max-merged under a lock."""

    __slots__ = ("_clock", "_lock", "end")

    def __init__(self, clock: Clock | None = None) -> None:
        self.end = -math.inf
        self._clock = clock
        self._lock = threading.Lock()

    def _now(self) -> float:
        clock = _clock.resolve(self._clock)
        return clock.monotonic()

    def extend(self, seconds: float) -> float:
        """Make the window last at least *seconds* from now; return the seconds it now has left."""
        with self._lock:
            now = self._now()
            end = now + seconds
            self.end = max(self.end, end)
            return max(0.0, self.end - now)

    def remaining(self) -> float:
        """Return the seconds until the window ends (0.0 when closed); lock-free."""
        end = self.end
        if end == -math.inf:
            return 0.0
        left = end - self._now()
        return left if left > 0.0 else 0.0

    def clear(self) -> None:
        """Close the window at once."""
        with self._lock:
            self.end = -math.inf

    def view(self) -> tuple[float, float | None]:
        """Return (seconds left, epoch seconds of the end or None when closed)."""
        clock = _clock.resolve(self._clock)
        now = clock.monotonic()
        end = self.end
        if end <= now:
            return 0.0, None
        return end - now, epoch_of(end, now, clock.time())

    def snapshot(self, key: str) -> LimiterSnapshot:
        """Return the operator's view of the window of *key* (no limiter), changing nothing."""
        left, ends_at = self.view()
        return LimiterSnapshot(key, None, None, None, 0, 0, left > 0.0, left, ends_at)

    def idle(self) -> bool:
        """Whether the window is closed: a fresh backend would answer the same (eviction)."""
        return self.end <= self._now()


def memory_window(key: str, policy: Any, store: Any) -> MemoryWindowBackend:
    """``MemoryStore``'s ``"window"`` factory."""
    return MemoryWindowBackend(getattr(policy, "clock", None))


class BackoffWindow:
    """
    The backoff window of one key, shared by every ``@rate_limited`` caller of that key.

    Get one with ``backoff_window(key)``. ``set(seconds)`` opens (or extends) it; callers of
    the key wait until it ends before starting. Setting never shortens an open window.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_backend", "_clock", "key")

    def __init__(self, key: str, backend: WindowBackend, clock: Clock | None = None) -> None:
        self.key = key
        self._backend = backend
        self._clock = clock

    def set(self, seconds: float | timedelta, *, reason: str = "explicit") -> float:
        """
        Open the window for *seconds* from now, unless it is already open for longer.

        Returns:
            The seconds the window has left after the call.
        """
        value = duration("BackoffWindow.set", "seconds", seconds)
        assert value is not None
        left = self._backend.extend(value)
        if BUS.subs:
            emit(
                "resilience.window.set",
                {"seconds": value, "remaining": left},
                {"key": self.key, "reason": reason},
            )
        return left

    def remaining(self) -> float:
        """Return the seconds until the window ends (0.0 when closed)."""
        return self._backend.remaining()

    @property
    def is_open(self) -> bool:
        """Whether callers of the key must wait now."""
        return self._backend.remaining() > 0.0

    def clear(self) -> None:
        """Close the window at once; waiting callers start when they next look."""
        self._backend.clear()

    def _clock_now(self) -> Clock:
        return _clock.resolve(self._clock)

    def wait(self) -> float:
        """Block until the window is closed, re-checking after each sleep; return seconds waited."""
        clock = self._clock_now()
        waited = 0.0
        left = self._backend.remaining()
        while left > 0.0:
            clock.sleep(left)
            waited += left
            left = self._backend.remaining()
        return waited

    async def wait_async(self) -> float:
        """Suspend until the window is closed, re-checking after each sleep; return seconds waited."""
        clock = self._clock_now()
        waited = 0.0
        left = self._backend.remaining()
        while left > 0.0:
            await clock.asleep(left)
            waited += left
            left = self._backend.remaining()
        return waited

    def __repr__(self) -> str:
        return f"<BackoffWindow {self.key!r} remaining={self.remaining():.3f}s>"


def backoff_window(key: str, *, store: Any = None, clock: Clock | None = None) -> BackoffWindow:
    """
    Return the shared backoff window of *key* (the key of ``@rate_limited`` callers).

    Args:
        key: The limiter key, such as a base URL plus an API key.
        store: The store holding the window (default: this process's memory).
        clock: Where time is read and how ``wait`` sleeps (default: the process's clock).
            It is used only if this call creates the window.

    .. versionadded:: 0.1.0
    """
    if not isinstance(key, str):
        msg = f"backoff_window() key must be a string, got {type(key).__name__}"
        raise TypeError(msg)
    spec = SimpleNamespace(clock=clock)
    backend: WindowBackend = (store or DEFAULT_STORE).backend("window", key, spec)
    return BackoffWindow(key, backend, clock)
