"""
Retry budgets: retries may be at most a fraction of calls, so an outage cannot become a storm.

As in Finagle (and hyx, redress after it): over a sliding *window*, the retries of every
``@retry`` sharing a budget may number at most ``ratio * calls + min_retries_per_second *
window``. Each decorated call records one call; each retry withdraws one. The minimum keeps
a quiet service able to retry at all; the ratio caps the extra load a fleet adds when a
dependency fails, whatever each caller's own ``attempts``.

The accounting (``BudgetState``) is pure, fed with ``now``: counts in ten buckets of
``window / 10`` seconds each (so the window slides in tenths; old counts expire bucket by
bucket), with running totals, so every decision is O(1) and memory is fixed.
"""

from __future__ import annotations

import math
import threading

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from resilience import _clock
from resilience._dictable import FromDict
from resilience._errors import StoreUnavailableError
from resilience._snapshot import BudgetSnapshot
from resilience._validate import check_clock, check_number, check_store, duration
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import store_unavailable


if TYPE_CHECKING:
    from resilience.stores._memory import MemoryStore
    from resilience.typing import Clock


__all__ = ["BudgetBackend", "BudgetState", "MemoryBudgetBackend", "RetryBudget"]

_BUCKETS = 10


class BudgetState:
    """
    Calls and retries over a sliding window, in fixed buckets: pure, no lock, no clock.

    Args:
        ratio: Retries allowed per call.
        window: The window in seconds.
        min_retries_per_second: Retries allowed per second whatever the calls.
    """

    __slots__ = (
        "calls",
        "current",
        "floor",
        "ratio",
        "retries",
        "total_calls",
        "total_retries",
        "width",
    )

    def __init__(self, ratio: float, window: float, min_retries_per_second: float) -> None:
        self.ratio = ratio
        self.width = window / _BUCKETS
        self.floor = min_retries_per_second * window
        self.calls = [0] * _BUCKETS
        self.retries = [0] * _BUCKETS
        self.total_calls = 0
        self.total_retries = 0
        self.current = -math.inf

    def _roll(self, now: float) -> int:
        """Expire the buckets that slid out of the window; return the current bucket's slot."""
        index = math.floor(now / self.width)
        if index > self.current:
            stale = (
                _BUCKETS if self.current == -math.inf else min(_BUCKETS, index - int(self.current))
            )
            for step in range(stale):
                slot = (index - step) % _BUCKETS
                self.total_calls -= self.calls[slot]
                self.total_retries -= self.retries[slot]
                self.calls[slot] = 0
                self.retries[slot] = 0
            self.current = index
        return int(self.current) % _BUCKETS

    def record_call(self, now: float) -> None:
        """Count one call at *now*."""
        slot = self._roll(now)
        self.calls[slot] += 1
        self.total_calls += 1

    def balance(self, now: float) -> float:
        """Return how many retries the budget allows at *now*."""
        self._roll(now)
        return self.ratio * self.total_calls + self.floor - self.total_retries

    def view(self, now: float) -> tuple[int, int]:
        """Return (calls, retries) in the window as of *now*, changing nothing."""
        index = math.floor(now / self.width)
        if self.current == -math.inf or index - self.current >= _BUCKETS:
            return 0, 0
        calls, retries = self.total_calls, self.total_retries
        for step in range(int(self.current) + 1, index + 1):
            calls -= self.calls[step % _BUCKETS]
            retries -= self.retries[step % _BUCKETS]
        return calls, retries

    def try_retry(self, now: float) -> bool:
        """Withdraw one retry at *now* if the budget allows it; return whether it did."""
        if self.balance(now) < 1.0:
            return False
        slot = int(self.current) % _BUCKETS
        self.retries[slot] += 1
        self.total_retries += 1
        return True


class BudgetBackend(Protocol):
    """
    The shared state of one retry budget; each method is one atomic decision.

    .. versionadded:: 0.1.0
    """

    def deposit(self) -> None:
        """Count one call."""
        ...

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it; return whether it did."""
        ...

    def balance(self) -> float:
        """Return how many retries the budget allows now."""
        ...

    def snapshot(self, key: str) -> BudgetSnapshot:
        """Return the operator's view of the budget of *key*, changing nothing."""
        ...


class MemoryBudgetBackend:
    """A retry budget in this process: ``BudgetState`` under a lock."""

    __slots__ = ("_clock", "_lock", "_state", "_window")

    def __init__(self, budget: RetryBudget) -> None:
        window = budget.window
        assert isinstance(window, float)
        self._window = window
        self._state = BudgetState(budget.ratio, window, budget.min_retries_per_second)
        self._clock = budget.clock
        self._lock = threading.Lock()

    def _now(self) -> float:
        clock = _clock.resolve(self._clock)
        return clock.monotonic()

    def deposit(self) -> None:
        """Count one call."""
        with self._lock:
            self._state.record_call(self._now())

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it; return whether it did."""
        with self._lock:
            return self._state.try_retry(self._now())

    def balance(self) -> float:
        """Return how many retries the budget allows now."""
        with self._lock:
            return self._state.balance(self._now())

    def snapshot(self, key: str) -> BudgetSnapshot:
        """Return the operator's view of the budget of *key*, changing nothing."""
        state = self._state
        with self._lock:
            calls, retries = state.view(self._now())
        return BudgetSnapshot(
            key=key,
            balance=state.ratio * calls + state.floor - retries,
            ratio=state.ratio,
            window=self._window,
            calls=calls,
            retries=retries,
        )

    def idle(self) -> bool:
        """Whether every call and retry slid out of the window (eviction)."""
        with self._lock:
            state = self._state
            state._roll(self._now())
            return state.total_calls == 0 and state.total_retries == 0


def memory_budget(key: str, budget: RetryBudget, store: MemoryStore) -> MemoryBudgetBackend:
    """``MemoryStore``'s ``"budget"`` factory."""
    return MemoryBudgetBackend(budget)


@dataclass(frozen=True, slots=True)
class RetryBudget(FromDict):
    """
    A cap on retries shared by every ``@retry`` given it: at most *ratio* retries per call.

    Pass it as ``RetryPolicy(budget=RetryBudget(...))``. Over any *window* seconds the
    retries may number at most ``ratio * calls + min_retries_per_second * window``; when
    the budget is spent, ``@retry`` gives up at once (its note says so).

    Args:
        ratio: Retries allowed per call (0.1: one retry for every ten calls), >= 0.
        window: The window in seconds over which calls and retries are counted (> 0).
        min_retries_per_second: Retries allowed per second whatever the calls (>= 0).
        key: Budgets with the same key (on the same store) share one count; without a
            key, the count belongs to this object (and to the policies holding it).
        store: Where a keyed count lives (default: this process's memory).
        clock: Where time is read (default: the process's clock).

    .. versionadded:: 0.1.0
    """

    ratio: float = 0.1
    window: float | timedelta = 10.0
    min_retries_per_second: float = 1.0
    key: str | None = None
    store: Any = None
    clock: Clock | None = None
    _own: MemoryBudgetBackend | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        owner = "RetryBudget"
        object.__setattr__(self, "ratio", check_number(owner, "ratio", self.ratio, low=0.0))
        object.__setattr__(self, "window", duration(owner, "window", self.window, strict=True))
        minimum = check_number(
            owner, "min_retries_per_second", self.min_retries_per_second, low=0.0
        )
        object.__setattr__(self, "min_retries_per_second", minimum)
        if self.key is not None and not isinstance(self.key, str):
            msg = f"{owner}.key must be a string or None, got {type(self.key).__name__}"
            raise TypeError(msg)
        check_store(owner, self.store)
        check_clock(owner, self.clock)
        if self.key is None:
            object.__setattr__(self, "_own", MemoryBudgetBackend(self))

    def backend(self) -> BudgetBackend:
        """Return the shared state this budget reads and writes."""
        if self._own is not None:
            return self._own
        assert self.key is not None
        backend: BudgetBackend = (self.store or DEFAULT_STORE).backend("budget", self.key, self)
        return backend

    def record_call(self) -> None:
        """
        Count one call (``@retry`` does this for every call of a decorated function).

        A budget is advisory: when its store cannot be reached the call is not counted and
        goes on (``resilience.store.unavailable`` is emitted), never failing for it.
        """
        try:
            self.backend().deposit()
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="retry_budget", fail_open=True)

    async def arecord_call(self) -> None:
        """The async twin of ``record_call``: a remote store's round trip does not block."""
        backend = self.backend()
        adeposit = getattr(backend, "adeposit", None)
        try:
            if adeposit is None:
                backend.deposit()
            else:
                await adeposit()
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="retry_budget", fail_open=True)

    def try_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        """
        Take one retry if the budget allows it; return whether it did.

        ``@retry`` passes the failure asking for the retry (*outcome*, and *server_delay*:
        whether its wait came from the server); a budget counts every retry alike (a
        ``RetryQuota`` prices them by it).

        An unreachable store allows the retry (the policy's own limits still apply) and
        emits ``resilience.store.unavailable``: the caller's error is never replaced.
        """
        try:
            return self.backend().withdraw()
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="retry_budget", fail_open=True)
            return True

    def gave_up(self, outcome: object = None) -> None:
        """The retry core gave up on a call: nothing to do for a budget (quotas use it)."""

    async def atry_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        """The async twin of ``try_retry``: a remote store's round trip does not block."""
        backend = self.backend()
        awithdraw = getattr(backend, "awithdraw", None)
        try:
            if awithdraw is None:
                return backend.withdraw()
            return bool(await awithdraw())
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="retry_budget", fail_open=True)
            return True

    def balance(self) -> float:
        """Return how many retries the budget allows now (may be fractional)."""
        return self.backend().balance()

    def describe(self) -> str:
        """Return the rule in words, for messages."""
        return (
            f"at most {self.ratio:g} retries per call + {self.min_retries_per_second:g}/s "
            f"over {self.window:g} s"
        )

    def counting(self, runner: Callable[..., Any], kind: str = "sync") -> Callable[..., Any]:
        """
        Return *runner* preceded by ``record_call()``: how ``@retry`` counts calls.

        For coroutine functions the count goes through the backend's async twin when it has
        one (Redis), so a call never blocks its event loop on the store.
        """
        record = self.record_call
        if kind == "async":
            arecord = self.arecord_call

            async def acounted(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                await arecord()
                return await runner(wrapped, instance, args, kwargs)

            return acounted

        def counted(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            record()
            return runner(wrapped, instance, args, kwargs)

        return counted
