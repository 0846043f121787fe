"""
``RetryCall``: the decisions of one call's retry loop, and ``Progress``, shared by its calls.

The decisions are written once here, for all four drivers (sync and async in
``_retry_layer``, generator and async generator in ``_retry_generators``). Neither class
sleeps, reads the clock, calls the decorated function or does I/O of its own: the drivers do
the calling and the waiting, and feed in each outcome and the clock's time.
``RetryCall.next_delay`` answers with the wait before the next attempt, or None to give up;
``give_up`` then emits the event and re-raises the last error, returns the last result or
answers with the fallback. Its only side effects go through telemetry (events, the progress
tracker's queue), the retry budget and, on giving up, the fallback.

``Progress`` records when a call of one decorated function last succeeded, for
``progress_timeout``; it exists only on layers whose policy sets one.
"""

from __future__ import annotations

import inspect
import math
import random
import threading

from typing import TYPE_CHECKING, cast

from resilience import _config, _deadline
from resilience._errors import ResilienceError
from resilience._retry_after import retry_after_from
from resilience.telemetry import _retrying
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience._retry.layer import RetryLayer


__all__ = ["Progress", "RetryCall"]

_SWITCHES = _config.state  # never replaced, only its attributes set
_QUEUED_MAX = _retrying.RetryProgress.BOUND


class Progress:
    """When a call of one decorated function last succeeded, shared by all its calls."""

    __slots__ = ("_lock", "last", "retrying")

    def __init__(self) -> None:
        self.last = -math.inf
        self.retrying = 0
        self._lock = threading.Lock()

    def enter(self, now: float) -> None:
        """A call starts retrying; the first of a busy spell restarts the progress clock."""
        with self._lock:
            if self.retrying == 0:
                self.last = max(self.last, now)
            self.retrying += 1

    def leave(self) -> None:
        with self._lock:
            self.retrying -= 1

    def success(self, now: float) -> None:
        self.last = max(self.last, now)

    def stalled_for(self, now: float) -> float:
        return now - self.last


class RetryCall:
    """The decisions of one call's retry loop: pure, fed with outcomes and times."""

    # `attempt - 1` is the retry number: no separate counter to keep in step.
    __slots__ = ("attempt", "layer", "previous", "reason", "server_delay", "started")

    def __init__(self, layer: RetryLayer, started: float) -> None:
        self.layer = layer
        self.started = started
        self.attempt = 1
        self.previous = layer.base
        # `reason` and `server_delay` are set by `next_delay` before anything reads them.

    def next_delay(self, outcome: object, now: float) -> float | None:
        """Return the wait before the next attempt, or None to give up (see ``reason``)."""
        layer = self.layer
        # The tracker's `failed`, inline: one lock-free append; the lock only when due.
        tracker = layer.tracker
        queued = tracker.outcomes
        queued.append(outcome)
        if now >= tracker.due_at or len(queued) >= _QUEUED_MAX:
            tracker.report_if_due(now)
        switches = _SWITCHES
        if not switches.active:
            self.reason = "resilience is switched off (set_active(False))"
            return None
        limit = layer.limit  # math.inf for attempts=None
        testing = switches.testing
        if testing and switches.testing_attempts is not None:
            limit = min(limit, switches.testing_attempts)
        if self.attempt >= limit:
            self.reason = f"the limit of {limit} attempt(s) was reached"
            return None
        if layer.progress is not None and self.progress_expired(now):
            return None
        hook = layer.hook
        if hook is retry_after_from:  # the default hook: skip its call when it has no source
            try:
                hinted = (
                    isinstance(outcome, ResilienceError)
                    or getattr(outcome, "response", None) is not None
                    or getattr(outcome, "headers", None) is not None
                )
            except Exception:  # a raising property: let the hook decide (it never raises)
                hinted = True
        else:
            hinted = hook is not None
        if hinted or not layer.zero:
            delay = self._delay_for(outcome)
        else:  # base 0: every strategy and jitter gives 0, so no draw either
            delay = 0.0
            self.server_delay = False
        if testing:
            delay = 0.0
        if layer.guarded and not self._within_limits(delay, now):
            return None
        if _deadline._current.get() is not None and not self._before_deadline(delay):
            return None
        self.attempt += 1
        return delay

    def _before_deadline(self, delay: float) -> bool:
        """Whether the wait of *delay* ends before the current deadline (with time to call)."""
        scope = _deadline._current.get()
        left = _deadline.remaining()
        if scope is None or left is None or delay < left:
            return True
        self.reason = (
            f"the next wait of {delay:.3f} s would cross {scope.describe()} ({left:.3f} s left)"
        )
        return False

    def _within_limits(self, delay: float, now: float) -> bool:
        """Whether the timeout and the budget allow a retry after *delay*."""
        policy = self.layer.policy
        timeout = policy.timeout
        if timeout is not None and (now - self.started) + delay > timeout:  # type: ignore[operator]
            self.reason = f"the next wait of {delay:.3f} s would cross the timeout of {timeout:g} s"
            return False
        budget = policy.budget
        if budget is not None and not budget.try_retry():
            self.reason = f"the retry budget is spent ({budget.describe()})"
            return False
        return True

    def progress_expired(self, now: float) -> bool:
        """Whether no call of the function has succeeded for ``progress_timeout``."""
        limit = self.layer.policy.progress_timeout
        progress = self.layer.progress
        if limit is None or progress is None:
            return False
        stalled = progress.stalled_for(now)
        if stalled >= limit:  # type: ignore[operator]
            self.reason = f"no call succeeded for {stalled:.3f} s (progress_timeout {limit:g} s)"
            return True
        return False

    def _delay_for(self, outcome: object) -> float:
        policy = self.layer.policy
        hook = policy.delay_hook
        server = None
        if hook is not None:
            try:
                server = hook(outcome)
            except Exception:  # a broken hook must not replace the caller's error
                server = None
        if server is not None and server > 0 and math.isfinite(server):
            self.server_delay = True
            return min(float(server), cast("float", policy.retry_after_cap))
        self.server_delay = False
        backoff = policy.backoff
        if backoff.base == 0.0:  # every strategy and jitter gives 0: skip the draw
            return 0.0
        delay = backoff._next(self.attempt - 1, self.previous, random.random())
        self.previous = delay
        return delay

    def give_up(self, outcome: object, is_exc: bool, now: float) -> object:
        """Emit the give-up event; re-raise the last exception or return the last result."""
        elapsed = now - self.started
        name = self.layer.name
        if BUS.subs:
            emit(
                "resilience.retry.give_up",
                {"attempts": self.attempt, "elapsed": elapsed},
                {"name": name, "reason": self.reason, "outcome": outcome},
            )
        if is_exc:
            assert isinstance(outcome, BaseException)
            outcome.add_note(
                f"resilience.retry: gave up on {name} after {self.attempt} attempt(s) "
                f"in {elapsed:.3f} s: {self.reason}"
            )
            if self.layer.fallback is not None and _config.state.active:
                return self.layer.fallback.sync(outcome)
            raise outcome
        return outcome

    async def agive_up(self, outcome: object, is_exc: bool, now: float) -> object:
        """``give_up`` for async drivers: an async fallback's answer is awaited."""
        answer = self.give_up(outcome, is_exc, now)
        if is_exc and inspect.isawaitable(answer):  # only a fallback answers for an exception
            return await answer
        return answer

    def announce(self, outcome: object, delay: float) -> None:
        """Emit the event that a retry is coming after *delay* seconds."""
        emit(
            "resilience.retry.retry",
            {"attempt": self.attempt - 1, "delay": delay},
            {
                "name": self.layer.name,
                "outcome": outcome,
                "server_delay": self.server_delay,
                "reason": _retrying.describe(outcome),
            },
        )
