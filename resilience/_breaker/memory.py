"""
``MemoryBreaker``: a breaker's state machine in this process's memory, and its windows.

``MemoryBreaker`` implements ``BreakerBackend`` (``_breaker.contract``) under one lock per
breaker: closed, open, half-open, with probe slots and spell numbers. In failure-rate mode it
counts outcomes in a ``CountWindow`` (the last N calls) or a ``TimeWindow`` (the last N
seconds). ``live`` holds every instance, so a store clear can retire the ones it dropped.
``_breaker.redis`` runs the same machine in Lua.
"""

from __future__ import annotations

import math
import threading
import weakref

from typing import TYPE_CHECKING, Final

from resilience import _clock
from resilience._breaker.contract import (
    ADMITTED,
    CLOSED,
    FAILURE,
    HALF_OPEN,
    IGNORED,
    OPEN,
    REFUSED,
    RETIRED,
    STATE_NAMES,
    SUCCESS,
    Admission,
    BreakerConfig,
    CircuitBreakerStats,
    Transition,
)
from resilience._snapshot import BreakerSnapshot, epoch_of


if TYPE_CHECKING:
    from resilience._policies import CircuitBreakerPolicy
    from resilience.typing import Clock


__all__ = ["TIME_BUCKETS", "CountWindow", "MemoryBreaker", "TimeWindow", "live"]

TIME_BUCKETS: Final = 10


# -- failure-rate windows ---------------------------------------------------------------------


class CountWindow:
    """The outcomes of the last *size* calls, as a ring of 0/1 with running totals."""

    __slots__ = ("_pos", "_ring", "calls", "failures", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = bytearray(size)
        self._pos = 0
        self.calls = 0
        self.failures = 0

    def add(self, failed: bool, now: float) -> None:
        """Record one call's outcome (*now* is unused: the window counts calls)."""
        pos = self._pos
        if self.calls == self.size:
            self.failures -= self._ring[pos]
        else:
            self.calls += 1
        self._ring[pos] = failed
        self.failures += failed
        self._pos = pos + 1 if pos + 1 < self.size else 0

    def counts(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) in the window."""
        return self.calls, self.failures

    def peek(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) in the window, changing nothing (for snapshots)."""
        return self.calls, self.failures

    def clear(self) -> None:
        """Forget every call."""
        self._ring = bytearray(self.size)
        self._pos = self.calls = self.failures = 0


class TimeWindow:
    """
    The calls of the last *duration* seconds, in ``buckets`` steps of ``duration/buckets``.

    Time is cut into buckets ``floor(t / width)``; at time *now* the window holds the calls
    whose bucket is one of the last ``buckets`` ones, up to and including now's. So every
    call of the last ``duration - width`` seconds counts, and none older than *duration*.
    """

    __slots__ = ("_calls", "_fails", "_head", "buckets", "calls", "failures", "width")

    def __init__(self, duration: float, buckets: int = TIME_BUCKETS) -> None:
        self.buckets = buckets
        self.width = duration / buckets
        self._calls = [0] * buckets
        self._fails = [0] * buckets
        self._head: int | None = None
        self.calls = 0
        self.failures = 0

    def _advance(self, now: float) -> int:
        index = math.floor(now / self.width)
        head = self._head
        if head is None or index - head >= self.buckets:
            self.clear()
        elif index > head:
            for step in range(head + 1, index + 1):
                slot = step % self.buckets
                self.calls -= self._calls[slot]
                self.failures -= self._fails[slot]
                self._calls[slot] = self._fails[slot] = 0
        else:  # a clock that went back (another machine's): count it in the newest bucket
            return head
        self._head = index
        return index

    def add(self, failed: bool, now: float) -> None:
        """Record one call's outcome at time *now*."""
        slot = self._advance(now) % self.buckets
        self._calls[slot] += 1
        self._fails[slot] += failed
        self.calls += 1
        self.failures += failed

    def counts(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) in the window as of *now*."""
        self._advance(now)
        return self.calls, self.failures

    def peek(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) in the window as of *now*, changing nothing."""
        index = math.floor(now / self.width)
        head = self._head
        if head is None or index - head >= self.buckets:
            return 0, 0
        calls, failures = self.calls, self.failures
        for step in range(head + 1, index + 1):
            calls -= self._calls[step % self.buckets]
            failures -= self._fails[step % self.buckets]
        return calls, failures

    def clear(self) -> None:
        """Forget every call."""
        self._calls = [0] * self.buckets
        self._fails = [0] * self.buckets
        self._head = None
        self.calls = self.failures = 0


# -- the memory backend -----------------------------------------------------------------------

live: weakref.WeakSet[MemoryBreaker] = weakref.WeakSet()


class MemoryBreaker:
    """
    ``BreakerBackend`` in this process's memory.

    Every step runs under one lock; the fast-path hints are read without it.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_closed_at",
        "_consecutive",
        "_epoch",
        "_failures",
        "_lock",
        "_opened_at",
        "_probes",
        "_reason",
        "_rejected",
        "_state",
        "_times_opened",
        "_window",
        "closed",
        "config",
        "dirty",
        "name",
        "retired",
        "store",
    )

    def __init__(self, name: str, policy: CircuitBreakerPolicy, store: object) -> None:
        self.name = name
        self.store = store
        self.config = config = BreakerConfig.of(policy)
        self._clock = policy.clock
        self._lock = threading.Lock()
        self._window: CountWindow | TimeWindow | None = None
        if config.window_size is not None:
            self._window = CountWindow(config.window_size)
        elif config.window_duration is not None:
            self._window = TimeWindow(config.window_duration)
        self._state = CLOSED
        self.closed = True
        self.dirty = self._window is not None  # in failure-rate mode every success counts
        self.retired = False
        self._consecutive = 0
        self._epoch = 1
        self._probes = 0
        self._opened_at = 0.0
        self._closed_at: float | None = None  # when it last closed (None: never opened)
        self._reason = ""
        self._times_opened = 0
        self._failures = 0
        self._rejected = 0
        live.add(self)

    def _time(self) -> Clock:
        return _clock.resolve(self._clock)

    # -- the protocol -------------------------------------------------------------------------

    def admit(self) -> Admission:
        """Decide whether a call may start; reserve a probe slot if it is a probe."""
        if self.closed:
            return ADMITTED
        now = self._time().monotonic()
        with self._lock:
            return self._admit(now)

    def record(self, ticket: int, outcome: int) -> Transition | None:
        """Apply a call's outcome; return the state change it caused, if any."""
        now = self._time().monotonic()
        with self._lock:
            return self._record(ticket, outcome, now)

    async def aadmit(self) -> Admission:
        """The async twin of ``admit`` (memory never waits, so it is the same step)."""
        return self.admit()

    async def arecord(self, ticket: int, outcome: int) -> Transition | None:
        """The async twin of ``record`` (memory never waits, so it is the same step)."""
        return self.record(ticket, outcome)

    def idle(self) -> bool:
        """Whether a fresh breaker would behave the same (closed, nothing counted): eviction."""
        with self._lock:
            if self._state != CLOSED or self._consecutive or self._probes:
                return False
            window = self._window
            return window is None or window.counts(self._time().monotonic())[0] == 0

    def reset(self) -> Transition | None:
        """Close the breaker and clear its counts (the totals since creation stay)."""
        now = self._time().monotonic()
        with self._lock:
            before = self._state_at(now)
            if self._state == RETIRED:
                return None
            return self._close("reset by hand", before, now)

    def state(self) -> str:
        """Return ``"closed"``, ``"open"`` or ``"half_open"`` as of now."""
        now = self._time().monotonic()
        with self._lock:
            return self._state_at(now)

    def stats(self) -> CircuitBreakerStats:
        """Return a snapshot of the counts and the state as of now."""
        clock = self._time()
        now = clock.monotonic()
        with self._lock:
            state = self._state_at(now)
            calls, failures = self._window.counts(now) if self._window is not None else (0, 0)
            is_open = self._state in (OPEN, HALF_OPEN)
            return CircuitBreakerStats(
                name=self.name,
                state=state,
                consecutive_failures=self._consecutive,
                window_calls=calls,
                window_failures=failures,
                failure_rate=failures / calls if calls else None,
                probes=self._probes if self._state == HALF_OPEN else 0,
                opened_at=clock.time() - (now - self._opened_at) if is_open else None,
                retry_after=self._retry_after(now) if state == "open" else 0.0,
                times_opened=self._times_opened,
                failures=self._failures,
                rejected=self._rejected,
            )

    def snapshot(self) -> BreakerSnapshot:
        """Return the operator's view of this breaker as of now, changing nothing."""
        clock = self._time()
        now = clock.monotonic()
        wall = clock.time()
        config = self.config
        with self._lock:
            state = self._state_at(now)
            window = self._window
            calls, failures = window.peek(now) if window is not None else (0, 0)
            closed_at = self._closed_at
            since = None if closed_at is None else epoch_of(closed_at, now, wall)
            if state == "open":
                since = epoch_of(self._opened_at, now, wall)
            elif state == "half_open":
                since = epoch_of(self._opened_at + config.reset_timeout, now, wall)
            return BreakerSnapshot(
                name=self.name,
                state=state,
                since=since,
                reason=self._reason if state != "closed" else "",
                consecutive_failures=self._consecutive,
                failure_threshold=config.failure_threshold,
                failure_rate=failures / calls if calls else None,
                failure_rate_threshold=config.failure_rate,
                window_calls=calls,
                window_failures=failures,
                probes=self._probes if self._state == HALF_OPEN else 0,
                next_probe_in=self._retry_after(now) if state == "open" else 0.0,
                reset_timeout=config.reset_timeout,
                times_opened=self._times_opened,
                failures=self._failures,
                rejected=self._rejected,
            )

    def retire(self) -> None:
        """Send every user of this backend to its store for a new one (after a store clear)."""
        with self._lock:
            self._state = RETIRED
            self.retired = True
            self.closed = False
            self.dirty = True

    # -- the state machine (under the lock; *now* is monotonic seconds) ------------------------

    def _state_at(self, now: float) -> str:
        if self._state == OPEN and now >= self._opened_at + self.config.reset_timeout:
            return "half_open"
        return STATE_NAMES[self._state]

    def _retry_after(self, now: float) -> float:
        return max(0.0, self._opened_at + self.config.reset_timeout - now)

    def _admit(self, now: float) -> Admission:
        state = self._state
        if state in (CLOSED, RETIRED):
            return ADMITTED
        transition = None
        open_for = now - self._opened_at
        if state == OPEN:
            if now < self._opened_at + self.config.reset_timeout:
                self._rejected += 1
                return Admission(REFUSED, self._retry_after(now), open_for, self._reason, "open")
            transition = self._change(
                HALF_OPEN, f"reset_timeout of {self.config.reset_timeout:g} s passed"
            )
            self._probes = 0
        limit = self.config.half_open_max_calls
        if self._probes < limit:
            self._probes += 1
            return Admission(self._epoch, 0.0, open_for, self._reason, "half_open", transition)
        self._rejected += 1
        busy = f"{self._reason}; its {limit} probe slot(s) are taken"
        return Admission(REFUSED, 0.0, open_for, busy, "half_open", transition)

    def _record(self, ticket: int, outcome: int, now: float) -> Transition | None:
        state = self._state
        if ticket > 0 and ticket == self._epoch and state == HALF_OPEN:
            if outcome == SUCCESS:
                return self._close("a probe call succeeded", "half_open", now)
            if outcome == FAILURE:
                self._failures += 1
                self._consecutive += 1
                return self._open(now, "a probe call failed", "half_open")
            self._probes -= 1
            return None
        # A call admitted while closed (or a probe of a spell that is over) counts only
        # while the breaker is closed: open and half-open states are decided by probes.
        if state != CLOSED or outcome == IGNORED:
            return None
        window = self._window
        if outcome == SUCCESS:
            self._consecutive = 0
            if window is None:
                self.dirty = False
            else:
                window.add(False, now)
            return None
        self._failures += 1
        self._consecutive += 1
        self.dirty = True
        if window is None:
            threshold = self.config.failure_threshold
            if self._consecutive >= threshold:
                return self._open(now, f"{self._consecutive} consecutive failure(s)", "closed")
            return None
        window.add(True, now)
        calls, failures = window.calls, window.failures
        rate = self.config.failure_rate
        if calls >= self.config.minimum_calls and rate is not None and failures / calls >= rate:
            reason = (
                f"{failures} of the last {calls} calls failed "
                f"({failures / calls:.0%} >= failure_rate {rate:.0%})"
            )
            return self._open(now, reason, "closed")
        return None

    def _open(self, now: float, reason: str, before: str) -> Transition:
        self._opened_at = now
        self._reason = f"opened after {reason}"
        self._times_opened += 1
        self._probes = 0
        self.closed = False
        self.dirty = True
        return self._change(OPEN, reason, before)

    def _close(self, reason: str, before: str, now: float) -> Transition | None:
        transition = None
        if before != "closed":
            transition = self._change(CLOSED, reason, before)
            self._closed_at = now
        self._consecutive = 0
        self._probes = 0
        self._reason = ""
        if self._window is not None:
            self._window.clear()
        self.dirty = self._window is not None
        self.closed = True
        return transition

    def _change(self, to: int, reason: str, before: str | None = None) -> Transition:
        window = self._window
        transition = Transition(
            self.name,
            STATE_NAMES[self._state] if before is None else before,
            STATE_NAMES[to],
            reason,
            self._consecutive,
            window.calls if window is not None else 0,
            window.failures if window is not None else 0,
        )
        self._state = to
        self._epoch += 1  # late outcomes of the last spell's probes count as ordinary calls
        return transition

    def __repr__(self) -> str:
        return f"<MemoryBreaker {self.name!r} {STATE_NAMES[self._state]}>"
