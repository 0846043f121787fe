"""
The retry decision, with no I/O: ``Rules`` per policy, ``RetryCall`` per call, ``LastSuccess``.

``RetryCall.next_delay(outcome, now)`` answers one of three things: a wait in seconds
before the next attempt, ``None`` to give up (``reason`` says why), or ``WITHDRAW``: ask the
retry budget first, then hand its answer to ``granted``, which answers a wait or ``None``.
The core never sleeps, reads a clock, calls the decorated function, emits an event or
touches a store: the drivers (``layer`` for plain calls, ``generators`` for generators) do
all of that, sync or async, and feed in each outcome and the clock's time. So an async
driver awaits the budget's async withdrawal and a Redis-backed budget never blocks its
event loop.

Two hooks for what comes next: every limit on time is read in ``time_left`` (a deadline
caps it the way ``timeout`` does), and the withdrawal step knows what kind of failure asks
for the retry (``server_delay``: the wait came from the server, e.g. a 429's Retry-After),
so a quota can weigh failures differently.

``LastSuccess`` records when a call of one decorated function last succeeded, for
``progress_timeout``; it exists only on layers whose policy sets one.
"""

from __future__ import annotations

import enum
import math
import random
import threading

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from resilience import _config, _deadline
from resilience._errors import ResilienceError
from resilience._retry_after import retry_after_from, safe_delay


if TYPE_CHECKING:
    from resilience._policies import RetryPolicy


__all__ = ["WITHDRAW", "Allowance", "LastSuccess", "RetryCall", "Rules", "Verdict"]

_SWITCHES = _config.state  # never replaced, only its attributes set
_deadline_in_force = _deadline._current.get  # the innermost deadline, or None


class Verdict(enum.Enum):
    """The answer of ``next_delay`` that is neither a wait nor giving up."""

    WITHDRAW = "withdraw"  # take one retry from the budget, then call `granted`


WITHDRAW: Final = Verdict.WITHDRAW


class Allowance(Protocol):
    """
    What the drivers ask of ``RetryPolicy.budget`` (a ``RetryBudget``; a quota may join it).

    Each retry withdraws one (``try_retry`` or, in async code, ``atry_retry``), told the
    failure asking for it and whether its wait came from the server (a 429's Retry-After);
    each call deposits once (``counting`` wraps the runner; ``arecord_call`` for async
    generators, which count themselves). ``describe`` words the rule for the give-up note.
    """

    def try_retry(self, outcome: object = None, server_delay: bool = False) -> bool: ...

    async def atry_retry(self, outcome: object = None, server_delay: bool = False) -> bool: ...

    async def arecord_call(self) -> None: ...

    def counting(self, runner: Callable[..., Any], kind: str = "sync") -> Callable[..., Any]: ...

    def describe(self) -> str: ...


class LastSuccess:
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


class Rules:
    """
    A policy's constants as the decisions read them, computed once per decorated function.

    ``last_success`` is the one shared state they read (None without ``progress_timeout``).
    """

    __slots__ = (
        "backoff",
        "base",
        "budget",
        "cap",
        "default_hook",
        "guarded",
        "hook",
        "last_success",
        "limit",
        "progress_timeout",
        "timeout",
        "timeout_text",
        "zero",
    )

    def __init__(self, policy: RetryPolicy) -> None:
        self.limit: float = math.inf if policy.attempts is None else policy.attempts
        self.hook = policy.delay_hook
        self.default_hook = self.hook is retry_after_from
        self.backoff = policy.backoff
        self.base = policy.backoff.base
        self.zero = self.base == 0.0  # every strategy and jitter gives 0: no draw
        self.cap = cast("float", policy.retry_after_cap)
        self.timeout = cast("float | None", policy.timeout)
        self.timeout_text = "" if self.timeout is None else f"the timeout of {self.timeout:g} s"
        self.progress_timeout = cast("float | None", policy.progress_timeout)
        self.budget: Allowance | None = policy.budget
        self.last_success = LastSuccess() if policy.progress_timeout is not None else None
        self.guarded = self.timeout is not None or self.budget is not None


class RetryCall:
    """The decisions of one call's retry loop: pure, fed with outcomes and times."""

    # `attempt - 1` is the retry number: no separate counter to keep in step.
    __slots__ = (
        "attempt",
        "pending",
        "previous",
        "reason",
        "rules",
        "server_delay",
        "started",
    )

    def __init__(self, rules: Rules, started: float) -> None:
        self.rules = rules
        self.started = started
        self.attempt = 1
        self.previous = rules.base
        # `reason`, `server_delay` and `pending` are set by `next_delay` before anything
        # reads them.

    def next_delay(self, outcome: object, now: float) -> float | Verdict | None:
        """The wait before the next attempt, ``WITHDRAW`` (ask the budget), or None to give up."""
        rules = self.rules
        switches = _SWITCHES
        if not switches.active:
            self.reason = "resilience is switched off (set_active(False))"
            return None
        limit = rules.limit  # math.inf for attempts=None
        testing = switches.testing
        if testing and switches.testing_attempts is not None:
            limit = min(limit, switches.testing_attempts)
        if self.attempt >= limit:
            self.reason = f"the limit of {limit} attempt(s) was reached"
            return None
        if rules.last_success is not None and self.progress_expired(now):
            return None
        if rules.default_hook:  # skip the default hook's call when the outcome has no source
            try:
                hinted = (
                    isinstance(outcome, ResilienceError)
                    or getattr(outcome, "response", None) is not None
                    or getattr(outcome, "headers", None) is not None
                )
            except Exception:  # a raising property: let the hook decide (it never raises)
                hinted = True
        else:
            hinted = rules.hook is not None
        if hinted or not rules.zero:
            delay = self._delay_for(outcome)
        else:  # base 0: every strategy and jitter gives 0, so no draw either
            delay = 0.0
            self.server_delay = False
        if testing:
            delay = 0.0
        # A limit on time or a budget to ask (per policy), or a deadline (per context).
        if rules.guarded or _deadline_in_force() is not None:
            if self._crosses(delay, now):
                return None
            if rules.budget is not None:
                self.pending = delay
                return WITHDRAW
        self.attempt += 1
        return delay

    def granted(self, allowed: bool) -> float | None:
        """After ``WITHDRAW``: the wait if the budget gave a retry, else None to give up."""
        if not allowed:
            budget = self.rules.budget
            assert budget is not None
            self.reason = f"the retry budget is spent ({budget.describe()})"
            return None
        self.attempt += 1
        return self.pending

    def time_left(self, now: float) -> tuple[float, str] | None:
        """
        The seconds left for waits and attempts and what sets them; None without a limit.

        Every limit on time is read here: ``timeout`` counts from the call's start, and the
        deadline in force (``resilience.deadline``) caps it when it ends sooner.
        """
        rules = self.rules
        left = None
        if rules.timeout is not None:
            left = rules.timeout - (now - self.started), rules.timeout_text
        scope = _deadline_in_force()
        if scope is not None:
            until = _deadline.remaining()
            if until is not None and (left is None or until < left[0]):
                left = until, f"{scope.describe()} ({until:.3f} s left)"
        return left

    def _crosses(self, delay: float, now: float) -> bool:
        """Whether a wait of *delay* would end past the time left (then say so in ``reason``)."""
        left = self.time_left(now)
        if left is None or delay < left[0]:
            return False
        if delay == left[0] and left[1] is self.rules.timeout_text:
            return False  # a wait may end exactly at the timeout (a deadline leaves no time)
        self.reason = f"the next wait of {delay:.3f} s would cross {left[1]}"
        return True

    def progress_expired(self, now: float) -> bool:
        """Whether no call of the function has succeeded for ``progress_timeout``."""
        limit = self.rules.progress_timeout
        last_success = self.rules.last_success
        if limit is None or last_success is None:
            return False
        stalled = last_success.stalled_for(now)
        if stalled >= limit:
            self.reason = f"no call succeeded for {stalled:.3f} s (progress_timeout {limit:g} s)"
            return True
        return False

    def _delay_for(self, outcome: object) -> float:
        rules = self.rules
        server = safe_delay(rules.hook, outcome, decorator="retry")
        if server:  # None or 0: the backoff
            self.server_delay = True
            return min(server, rules.cap)
        self.server_delay = False
        if rules.zero:
            return 0.0
        delay = rules.backoff._next(self.attempt - 1, self.previous, random.random())
        self.previous = delay
        return delay

    def summary(self, elapsed: float) -> str:
        """The note added to the last error on giving up."""
        return f"after {self.attempt} attempt(s) in {elapsed:.3f} s: {self.reason}"
