"""
Retry quotas: token buckets that cap retries so an outage cannot become a retry storm.

Two budgets for ``RetryPolicy.budget``, beside ``RetryBudget``:

- ``RetryQuota``, the AWS SDKs' standard retry quota: a bucket of *capacity* tokens that
  starts full; a retry after a throttling failure (HTTP 429, or any failure carrying a
  server delay) costs *throttle_cost*, any other retry *retry_cost*; with too few tokens
  the call gives up. A first-attempt success adds *success_refund*; a success after
  retries gives back its last retry's cost.
- ``RetryThrottle``, gRPC's retry throttling: *max_tokens* tokens; each retryable failed
  attempt takes 1, each success adds *token_ratio*; a retry is allowed only while the
  tokens are above ``max_tokens / 2``. Tokens are kept in thousandths (as gRPC does), so
  a ratio of 0.1 adds exactly 0.1.

How ``@retry`` drives them: the policy's ``counting`` wrapper opens a *ticket* for each
call (in a ``ContextVar``, so it follows the call's thread or task); the retry core asks
``try_retry(outcome, server_delay)`` before each retry and tells ``gave_up(outcome)`` when
it gives up; when the call returns without having given up, the wrapper refunds. The
tokens are one integer per key (``TokenBackend``): in memory under a lock, or in Redis as
one Lua step (``_budget.redis``).
"""

from __future__ import annotations

import contextvars
import math
import threading

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from resilience._dictable import FromDict
from resilience._errors import StoreUnavailableError
from resilience._snapshot import BudgetSnapshot
from resilience._validate import check_int, check_number, check_store
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import store_unavailable


if TYPE_CHECKING:
    from resilience._decorating import Runner
    from resilience.stores._memory import MemoryStore


__all__ = [
    "MemoryTokenBackend",
    "RetryQuota",
    "RetryThrottle",
    "TokenBackend",
    "is_throttling",
    "memory_tokens",
]

_MILLI = 1000


class TokenBackend(Protocol):
    """
    One bucket of whole tokens in ``[0, capacity]``; each step is one atomic decision.

    .. versionadded:: 0.2.0
    """

    def step(self, take: int, need: int, give: int) -> tuple[bool, int]:
        """
        Take *take* tokens if at least *need* are there (never below 0), then add *give*.

        Returns:
            Whether the take happened, and the tokens left after the step.
        """
        ...


class MemoryTokenBackend:
    """A bucket of tokens in this process, under a lock; it starts full."""

    __slots__ = ("_lock", "capacity", "tokens")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self._lock = threading.Lock()

    def step(self, take: int, need: int, give: int) -> tuple[bool, int]:
        """Take *take* tokens if at least *need* are there, then add *give* (see protocol)."""
        with self._lock:
            tokens = self.tokens
            ok = True
            if take:
                if tokens >= need:
                    tokens = max(0, tokens - take)
                else:
                    ok = False
            tokens = min(self.capacity, tokens + give)
            self.tokens = tokens
            return ok, tokens

    def snapshot(self, key: str) -> BudgetSnapshot:
        """The operator's view: the tokens left as the balance (a quota has no ratio)."""
        return BudgetSnapshot(key, float(self.tokens), None, None, 0, 0)


def memory_tokens(key: str, owner: Any, store: MemoryStore) -> MemoryTokenBackend:
    """``MemoryStore``'s ``"tokens"`` factory (``RetryQuota``, ``RetryThrottle``)."""
    return MemoryTokenBackend(owner.bucket_capacity)


def _status(obj: object) -> object:
    for name in ("status_code", "status"):
        try:
            value = getattr(obj, name, None)
        except Exception:
            continue
        if value is not None:
            return value
    return None


def is_throttling(outcome: object) -> bool:
    """Whether *outcome* is an HTTP 429: on itself (``status_code``/``status``) or its response."""
    if _status(outcome) == 429:
        return True
    try:
        response = getattr(outcome, "response", None)
    except Exception:
        return False
    return response is not None and _status(response) == 429


class _Ticket:
    """One call's dealings with a quota: its last retry's cost, and whether it gave up."""

    __slots__ = ("charged", "gave_up", "last_cost", "owner", "retries")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.retries = 0
        self.last_cost = 0
        self.gave_up = False
        self.charged = False  # the failure being given up on already took its token


_TICKET: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar(
    "resilience_quota_ticket", default=None
)


class _Bucket(FromDict):
    """What ``RetryQuota`` and ``RetryThrottle`` share: the tokens, the ticket, the wrapper."""

    __slots__ = ()
    key: str | None
    store: Any
    _own: MemoryTokenBackend | None

    @property
    def bucket_capacity(self) -> int:
        """The bucket's size in whole (stored) tokens."""
        raise NotImplementedError

    def backend(self) -> TokenBackend:
        """Return the shared bucket this quota reads and writes."""
        if self._own is not None:
            return self._own
        assert self.key is not None
        backend: TokenBackend = (self.store or DEFAULT_STORE).backend("tokens", self.key, self)
        return backend

    def _step(self, take: int, need: int, give: int) -> tuple[bool, int] | None:
        """One step; None when the store is unreachable (advisory: the retry goes on)."""
        try:
            return self.backend().step(take, need, give)
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="retry_quota", fail_open=True)
            return None

    async def _astep(self, take: int, need: int, give: int) -> tuple[bool, int] | None:
        """``_step`` through the backend's async twin when it has one (Redis)."""
        backend = self.backend()
        astep = getattr(backend, "astep", None)
        try:
            if astep is None:
                return backend.step(take, need, give)
            stepped: tuple[bool, int] = await astep(take, need, give)
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="retry_quota", fail_open=True)
            return None
        return stepped

    def _ticket(self) -> _Ticket | None:
        ticket = _TICKET.get()
        return ticket if ticket is not None and ticket.owner is self else None

    def _settle(self, ticket: _Ticket) -> None:
        """The call returned without giving up: refund as the rule says."""
        raise NotImplementedError

    def record_call(self) -> None:
        """Nothing to count per call: quotas are charged per retry (``RetryBudget`` parity)."""

    async def arecord_call(self) -> None:
        """The async twin of ``record_call`` (nothing to count)."""

    def counting(self, runner: Runner, kind: str = "sync") -> Callable[..., Any]:
        """Return *runner* inside a ticket, refunding when the call returns without giving up."""
        settle = self._settle
        if kind in ("gen", "asyncgen"):  # a generator's calls outlive the wrapper: no refunds
            return runner
        if kind == "async":

            async def aticketed(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                ticket = _Ticket(self)
                token = _TICKET.set(ticket)
                try:
                    result = await runner(wrapped, instance, args, kwargs)
                finally:
                    _TICKET.reset(token)
                if not ticket.gave_up:
                    settle(ticket)
                return result

            return aticketed

        def ticketed(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            ticket = _Ticket(self)
            token = _TICKET.set(ticket)
            try:
                result = runner(wrapped, instance, args, kwargs)
            finally:
                _TICKET.reset(token)
            if not ticket.gave_up:
                settle(ticket)
            return result

        return ticketed


@dataclass(frozen=True, slots=True)
class RetryQuota(_Bucket):
    """
    The AWS SDKs' standard retry quota, shared by every ``@retry`` given it.

    Pass it as ``RetryPolicy(budget=RetryQuota())``. The bucket starts full; each retry
    takes *throttle_cost* tokens after a throttling failure (an HTTP 429, or any failure
    with a server delay) and *retry_cost* after any other; with too few tokens the call
    gives up (its note says the quota is empty). A call that succeeds on its first attempt
    adds *success_refund*; one that succeeds after retries gives back its last retry's
    cost; never above *capacity*.

    Args:
        capacity: The bucket's size and starting level (>= 1).
        retry_cost: Tokens a retry takes after an ordinary failure (>= 0).
        throttle_cost: Tokens a retry takes after a throttling failure (>= 0).
        success_refund: Tokens a first-attempt success adds (>= 0).
        key: Quotas with the same key (on the same store) share one bucket; without a key
            the bucket belongs to this object, shared by every policy holding it.
        store: Where a keyed bucket lives (default: this process's memory).

    .. versionadded:: 0.2.0
    """

    capacity: int = 500
    retry_cost: int = 14
    throttle_cost: int = 5
    success_refund: int = 1
    key: str | None = None
    store: Any = None
    _own: MemoryTokenBackend | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        owner = "RetryQuota"
        check_int(owner, "capacity", self.capacity, low=1)
        for name in ("retry_cost", "throttle_cost", "success_refund"):
            check_int(owner, name, getattr(self, name), low=0)
        _check_key(owner, self.key, self.store)
        if self.key is None:
            object.__setattr__(self, "_own", MemoryTokenBackend(self.capacity))

    @property
    def bucket_capacity(self) -> int:
        """The bucket's size in tokens."""
        return self.capacity

    def tokens(self) -> int:
        """Return the tokens in the bucket now."""
        stepped = self._step(0, 0, 0)
        return self.capacity if stepped is None else stepped[1]

    def _cost(self, outcome: object, server_delay: bool) -> int:
        throttled = server_delay or is_throttling(outcome)
        return self.throttle_cost if throttled else self.retry_cost

    def _taken(self, stepped: tuple[bool, int] | None, cost: int) -> bool:
        if stepped is None:
            return True
        ticket = self._ticket()
        if stepped[0] and ticket is not None:
            ticket.retries += 1
            ticket.last_cost = cost
        return stepped[0]

    def try_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        """Take the retry's cost if the bucket holds it; return whether it did."""
        cost = self._cost(outcome, server_delay)
        return self._taken(self._step(cost, cost, 0), cost)

    async def atry_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        """The async twin of ``try_retry``: a Redis bucket answers on the asyncio client."""
        cost = self._cost(outcome, server_delay)
        return self._taken(await self._astep(cost, cost, 0), cost)

    def gave_up(self, outcome: object = None) -> None:
        """The retry core gave up on this call: no refund when it returns."""
        ticket = self._ticket()
        if ticket is not None:
            ticket.gave_up = True

    def _settle(self, ticket: _Ticket) -> None:
        refund = self.success_refund if ticket.retries == 0 else ticket.last_cost
        if refund:
            self._step(0, 0, refund)

    def describe(self) -> str:
        """Return the rule in words, for messages."""
        return (
            f"the retry quota is empty: fewer than {self.retry_cost} tokens "
            f"({self.throttle_cost} after a throttling failure) of {self.capacity}"
        )


@dataclass(frozen=True, slots=True)
class RetryThrottle(_Bucket):
    """
    gRPC's retry throttling, shared by every ``@retry`` given it.

    Pass it as ``RetryPolicy(budget=RetryThrottle())``. Tokens start at *max_tokens*;
    every attempt that fails with a retryable error takes 1 and every success adds
    *token_ratio*, never above *max_tokens* nor below 0; a retry is allowed only while the
    tokens are above ``max_tokens / 2`` (checked after the failed attempt took its token).

    Args:
        max_tokens: The most tokens, and the start (>= 1).
        token_ratio: Tokens a success adds (> 0; kept to thousandths, as gRPC does).
        key: Throttles with the same key (on the same store) share one bucket; without a
            key the bucket belongs to this object, shared by every policy holding it.
        store: Where a keyed bucket lives (default: this process's memory).

    .. versionadded:: 0.2.0
    """

    max_tokens: int = 10
    token_ratio: float = 0.1
    key: str | None = None
    store: Any = None
    _own: MemoryTokenBackend | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        owner = "RetryThrottle"
        check_int(owner, "max_tokens", self.max_tokens, low=1)
        ratio = check_number(owner, "token_ratio", self.token_ratio, low=0.0, low_open=True)
        if not math.isfinite(ratio) or ratio > self.max_tokens:
            msg = f"{owner}.token_ratio must be in (0, max_tokens], got {ratio!r}"
            raise ValueError(msg)
        object.__setattr__(self, "token_ratio", ratio)
        _check_key(owner, self.key, self.store)
        if self.key is None:
            object.__setattr__(self, "_own", MemoryTokenBackend(self.bucket_capacity))

    @property
    def bucket_capacity(self) -> int:
        """The bucket's size in thousandths of a token."""
        return self.max_tokens * _MILLI

    def tokens(self) -> float:
        """Return the tokens now (to a thousandth)."""
        stepped = self._step(0, 0, 0)
        return float(self.max_tokens) if stepped is None else stepped[1] / _MILLI

    def _fail(self) -> int | None:
        """A retryable attempt failed: take its token; return the level after."""
        stepped = self._step(_MILLI, 0, 0)
        return None if stepped is None else stepped[1]

    def try_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        """The failed attempt takes its token; then a retry is allowed above half the tokens."""
        return self._allowed(self._fail())

    def _allowed(self, level: int | None) -> bool:
        if level is None:
            return True
        allowed = 2 * level > self.bucket_capacity
        ticket = self._ticket()
        if ticket is not None:
            if allowed:
                ticket.retries += 1
            else:  # the give-up that follows is for this same, already charged, failure
                ticket.charged = True
        return allowed

    async def atry_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        """The async twin of ``try_retry``: a Redis bucket answers on the asyncio client."""
        stepped = await self._astep(_MILLI, 0, 0)
        return self._allowed(None if stepped is None else stepped[1])

    def gave_up(self, outcome: object = None) -> None:
        """The retry core gave up: the last failed attempt takes its token; no refund."""
        ticket = self._ticket()
        if ticket is not None:
            ticket.gave_up = True
            if ticket.charged:
                return
        self._fail()

    def _settle(self, ticket: _Ticket) -> None:
        self._step(0, 0, round(self.token_ratio * _MILLI))

    def describe(self) -> str:
        """Return the rule in words, for messages."""
        return (
            f"the retry throttle allows retries only above {self.max_tokens / 2:g} of "
            f"{self.max_tokens} tokens"
        )


def _check_key(owner: str, key: object, store: object = None) -> None:
    check_store(owner, store)
    if key is not None and not isinstance(key, str):
        msg = f"{owner}.key must be a string or None, got {type(key).__name__}"
        raise TypeError(msg)
