"""
The operator's view: a read-only snapshot of everything a store keeps, at one moment.

Each backend contract (breaker, rate budget, backoff window, permit pool, retry budget)
has a ``snapshot()`` method, implemented by its memory and its Redis twin, that reads its
state without changing it and returns one of the frozen records below. A store's own
``snapshot()`` asks every backend it holds (memory: its registry; Redis: one ``SCAN`` pass
over its namespace, then one pipeline of plain reads, never a script and never a write)
and returns a ``Snapshot``. ``snapshot(store)`` adds this process's rolling metrics when
it is given them (``resilience.telemetry.RollingMetrics``).

Times are wall-clock epoch seconds (``since``, ``window_ends_at``) or seconds from now
(``next_probe_in``, ``window_remaining``). ``to_dict()`` passes every name and message
through ``resilience.telemetry``'s redaction, so what an operator sees holds no secrets.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final


if TYPE_CHECKING:
    from resilience.telemetry._rolling import NameMetrics, RollingMetrics


__all__ = [
    "STATE_ORDER",
    "BreakerSnapshot",
    "BudgetSnapshot",
    "LimiterSnapshot",
    "PoolSnapshot",
    "Snapshot",
    "ThrottleSnapshot",
    "epoch_of",
    "snapshot",
]

#: Open breakers first, then half-open, then closed: the order an operator reads them in.
STATE_ORDER: Final = {"open": 0, "half_open": 1, "closed": 2}


def epoch_of(moment: float, now: float, wall: float) -> float:
    """Return the epoch seconds of *moment* on a clock that reads *now* when the wall reads *wall*."""
    return wall - (now - moment)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """
    One circuit breaker as of the snapshot.

    Attributes:
        name: The breaker's name.
        state: ``"closed"``, ``"open"`` or ``"half_open"``.
        since: Epoch seconds at which the current state began: when it opened, became
            half-open, or last closed again (None: closed and never opened, or its Redis
            state expired since).
        reason: Why it opened (empty while closed).
        consecutive_failures: Failures in a row.
        failure_threshold: The consecutive failures that open it.
        failure_rate: Failures / calls in the failure-rate window (None without one, or
            without calls in it).
        failure_rate_threshold: The policy's ``failure_rate`` (None in consecutive mode).
        window_calls: Calls in the failure-rate window.
        window_failures: Failures in the failure-rate window.
        probes: Probe calls running now (half-open).
        next_probe_in: Seconds until a probe is allowed (0.0 unless open).
        reset_timeout: Seconds an open breaker waits before it lets a probe through.
        times_opened: How often it opened since it was created.
        failures: Failures recorded since it was created.
        rejected: Calls refused since it was created.

    .. versionadded:: 0.1.0
    """

    name: str
    state: str
    since: float | None
    reason: str
    consecutive_failures: int
    failure_threshold: int
    failure_rate: float | None
    failure_rate_threshold: float | None
    window_calls: int
    window_failures: int
    probes: int
    next_probe_in: float
    reset_timeout: float
    times_opened: int
    failures: int
    rejected: int


@dataclass(frozen=True, slots=True)
class LimiterSnapshot:
    """
    One rate budget (and its key's backoff window) as of the snapshot.

    Attributes:
        key: The limiter key.
        rate: Starts allowed per *per* seconds (None: a backoff window without a limiter,
            or a Redis budget whose numbers this store was never told).
        per: The window in seconds (None as for *rate*).
        burst: Back-to-back starts allowed (None as for *rate*).
        starts: Calls started in the last *per* seconds (the current window).
        waiting: Callers holding a reserved start in the future (waiting for their turn).
        saturated: Whether a caller arriving now would have to wait.
        window_remaining: Seconds the key's backoff window stays open (0.0: closed).
        window_ends_at: Epoch seconds at which that window ends (None: closed).

    .. versionadded:: 0.1.0
    """

    key: str
    rate: int | None
    per: float | None
    burst: int | None
    starts: int
    waiting: int
    saturated: bool
    window_remaining: float
    window_ends_at: float | None


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """
    One ``@bounded`` permit pool as of the snapshot.

    Attributes:
        key: The pool key.
        limit: The declared limit (None: a Redis pool whose limit this store was never told).
        live_limit: The adaptive limit now, where the pool has one (else None).
        in_use: Units held now (every process, for Redis).
        waiting: Callers waiting for a permit: this process's (memory), or every
            process's as their pollers report them (Redis; a process's count may be up
            to a quarter of a second old).
        oldest_lease: Seconds since the oldest lease held now was granted (memory) or
            granted or last renewed (Redis). None: nothing held. A memory pool records
            lease starts from its first snapshot on (so until then its hot path reads no
            clock): while a unit leased before then may still be held, this is the
            seconds since that first snapshot, and *oldest_lease_at_least* says so.
        holders: Units held per ``host:pid`` (Redis only; None in memory).
        oldest_lease_at_least: True when *oldest_lease* is a lower bound (above).

    .. versionadded:: 0.1.0
    """

    key: str
    limit: int | None
    live_limit: int | None
    in_use: int
    waiting: int | None
    oldest_lease: float | None
    holders: dict[str, int] | None = None
    oldest_lease_at_least: bool = False


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """
    One keyed retry budget, or a quota's bucket, as of the snapshot.

    Attributes:
        key: The budget key (a ``RetryQuota``'s or ``RetryThrottle``'s for a bucket).
        balance: Retries the budget allows now, or the tokens left in a bucket (None:
            numbers unknown to this store).
        ratio: Retries allowed per call (None as for *balance*).
        window: The counting window in seconds (None as for *balance*).
        calls: Calls counted in the window.
        retries: Retries taken in the window.

    .. versionadded:: 0.1.0
    """

    key: str
    balance: float | None
    ratio: float | None
    window: float | None
    calls: int
    retries: int


@dataclass(frozen=True, slots=True)
class ThrottleSnapshot:
    """
    One ``@throttled`` key (client-side adaptive throttling) as of the snapshot.

    Attributes:
        key: The throttle key.
        k: Requests allowed per accept before calls are refused.
        window: The counting window in seconds.
        requests: Requests counted in the window.
        accepts: Of those, requests the upstream accepted.
        probability: The chance a call starting now is refused locally (0.0: none).

    .. versionadded:: 0.2.0
    """

    key: str
    k: float | None
    window: float | None
    requests: int
    accepts: int
    probability: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """
    Everything one store keeps, read at one moment, plus this process's metrics if asked.

    Attributes:
        taken_at: Epoch seconds when it was read.
        store: What was read, such as ``"memory"`` or ``"Redis at host:port"``.
        breakers: Open breakers first, then half-open, then closed; by name within each.
        limiters: Saturated first, then by key.
        pools: Busiest first (units in use over the limit), then by key.
        budgets: Retry budgets, quotas and throttling buckets (tokens left), by key.
        throttles: ``@throttled`` keys, the most likely to refuse first, then by key.
        metrics: Per decorated name, from ``RollingMetrics`` (None unless asked).

    .. versionadded:: 0.1.0
    """

    taken_at: float
    store: str
    breakers: tuple[BreakerSnapshot, ...] = ()
    limiters: tuple[LimiterSnapshot, ...] = ()
    pools: tuple[PoolSnapshot, ...] = ()
    budgets: tuple[BudgetSnapshot, ...] = ()
    metrics: tuple[NameMetrics, ...] | None = field(default=None)
    throttles: tuple[ThrottleSnapshot, ...] = ()

    @classmethod
    def of(
        cls,
        taken_at: float,
        store: str,
        breakers: list[BreakerSnapshot],
        limiters: list[LimiterSnapshot],
        pools: list[PoolSnapshot],
        budgets: list[BudgetSnapshot],
        throttles: list[ThrottleSnapshot] | None = None,
    ) -> Snapshot:
        """Build a snapshot with every part in the order an operator reads it."""
        return cls(
            taken_at,
            store,
            tuple(sorted(breakers, key=lambda b: (STATE_ORDER.get(b.state, 3), b.name))),
            tuple(sorted(limiters, key=lambda r: (not r.saturated, r.key))),
            tuple(sorted(pools, key=lambda p: (-_busy(p), p.key))),
            tuple(sorted(budgets, key=lambda b: b.key)),
            throttles=tuple(sorted(throttles or (), key=lambda t: (-t.probability, t.key))),
        )

    def filtered(self, prefix: str) -> Snapshot:
        """Keep only the breakers, limiters, pools, budgets and metrics named *prefix*..."""
        return replace(
            self,
            breakers=tuple(b for b in self.breakers if b.name.startswith(prefix)),
            limiters=tuple(r for r in self.limiters if r.key.startswith(prefix)),
            pools=tuple(p for p in self.pools if p.key.startswith(prefix)),
            budgets=tuple(b for b in self.budgets if b.key.startswith(prefix)),
            throttles=tuple(t for t in self.throttles if t.key.startswith(prefix)),
            metrics=None
            if self.metrics is None
            else tuple(m for m in self.metrics if m.name.startswith(prefix)),
        )

    def to_dict(self) -> dict[str, Any]:
        """
        Return plain data for JSON, with every name and message redacted.

        Non-finite numbers become None, so ``json.dumps`` writes standard JSON.
        """
        clean = _Cleaner()
        return {
            "taken_at": self.taken_at,
            "store": clean(self.store),
            "breakers": [clean.record(b) for b in self.breakers],
            "limiters": [clean.record(r) for r in self.limiters],
            "pools": [clean.record(p) for p in self.pools],
            "budgets": [clean.record(b) for b in self.budgets],
            "throttles": [clean.record(t) for t in self.throttles],
            "metrics": None
            if self.metrics is None
            else [clean.data(m.to_dict()) for m in self.metrics],
        }


_PLAIN: Final = (int, bool, type(None))


class _Cleaner:
    """Redacts each distinct text once per snapshot (names repeat across a fleet's records)."""

    __slots__ = ("_scrub", "_seen")

    def __init__(self) -> None:
        from resilience.telemetry._redact import scrub  # noqa: PLC0415 - telemetry loads late

        self._scrub = scrub
        self._seen: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        found = self._seen.get(text)
        if found is None:
            found = self._seen[text] = self._scrub(text)
        return found

    def value(self, value: Any) -> Any:
        if value.__class__ in _PLAIN:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {self(str(k)): self.value(v) for k, v in value.items()}
        return value

    def record(self, record: Any) -> dict[str, Any]:
        return {name: self.value(getattr(record, name)) for name in record.__slots__}

    def data(self, data: dict[str, Any]) -> dict[str, Any]:
        return {name: self.value(value) for name, value in data.items()}


def _busy(pool: PoolSnapshot) -> float:
    limit = pool.live_limit or pool.limit
    return pool.in_use / limit if limit else float(pool.in_use > 0)


def snapshot(
    store: Any = None, *, metrics: RollingMetrics | None = None, prefix: str | None = None
) -> Snapshot:
    """
    Read everything *store* keeps, without changing any of it.

    Args:
        store: A ``MemoryStore`` or ``RedisStore`` (default: this process's memory store).
            A ``RedisStore`` shows the whole fleet's breakers, limiters and pools.
        metrics: This process's ``RollingMetrics``, to include per-name calls, failures,
            retries, give-ups, rejections and latency percentiles.
        prefix: Keep only names and keys starting with it.

    Raises:
        StoreUnavailableError: If a ``RedisStore`` did not answer within its timeout.

    .. versionadded:: 0.1.0
    """
    from resilience.stores._memory import DEFAULT_STORE  # noqa: PLC0415 - stores import us

    where = DEFAULT_STORE if store is None else store
    taken: Snapshot = where.snapshot()
    if metrics is not None:
        taken = replace(taken, metrics=tuple(metrics.snapshot()))
    return taken if prefix is None else taken.filtered(prefix)
