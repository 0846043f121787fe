"""
``@circuit_breaker``: stop calling a dependency that keeps failing, and probe it for recovery.

The state machine (closed, open, half-open) lives in a *backend*, one per breaker name and
store, which applies each step atomically: ``admit`` before a call, ``record`` after it.
The decorator's drivers (sync, async, generator, async generator) only classify outcomes
and feed them in, so sync and async callers share one breaker and one set of rules.

The closed path is built to cost almost nothing: the driver reads ``backend.closed`` and
calls; on success it writes only if ``backend.dirty`` says there is something to reset (a
success while the consecutive count is already 0 changes nothing, so it needs no lock and
no write). Failures, refusals and probes take the backend's lock.
"""

from __future__ import annotations

import math
import threading
import weakref

from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

from resilience import _clock, _config
from resilience._decorating import (
    Decorator,
    Kind,
    Layer,
    Runner,
    apply,
    is_target,
    policy_from,
    terminal,
)
from resilience._errors import CircuitOpenError, StoreUnavailableError
from resilience._fallback import Fallback
from resilience._policies import CircuitBreakerPolicy
from resilience.stores._memory import DEFAULT_STORE, MemoryStore
from resilience.stores._redis import RedisStore, store_unavailable
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock, ExceptionFilter


__all__ = [
    "Admission",
    "BreakerBackend",
    "BreakerConfig",
    "CircuitBreaker",
    "CircuitBreakerFields",
    "CircuitBreakerStats",
    "CountWindow",
    "MemoryBreaker",
    "TimeWindow",
    "Transition",
    "circuit_breaker",
    "get_circuit_breaker",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# Stored states. A stored OPEN whose reset_timeout has passed *reports* half_open.
CLOSED: Final = 0
OPEN: Final = 1
HALF_OPEN: Final = 2
RETIRED: Final = 3  # dropped by its store (testing.reset()); its users fetch a new one
STATE_NAMES: Final = ("closed", "open", "half_open", "closed")

# Outcomes fed to ``record``.
SUCCESS: Final = 0
FAILURE: Final = 1
IGNORED: Final = 2  # an exception not matching `on`, or a cancellation: gives a probe slot back

REFUSED: Final = -1
UNGUARDED: Final = -2  # the store was unreachable and the policy fails open: record nothing
TIME_BUCKETS: Final = 10


# -- the protocol every store implements ------------------------------------------------------


class BreakerConfig(NamedTuple):
    """The numbers that define a breaker's state machine; equal for every user of one name."""

    failure_threshold: int
    reset_timeout: float
    half_open_max_calls: int
    failure_rate: float | None
    window_size: int | None
    window_duration: float | None
    minimum_calls: int

    @classmethod
    def of(cls, policy: CircuitBreakerPolicy) -> BreakerConfig:
        """Return *policy*'s state-machine numbers, with the failure-rate defaults filled in."""
        size = policy.window_size
        span = policy.window_duration
        minimum = policy.minimum_calls
        if policy.failure_rate is not None and size is None and span is None:
            size = 100
        if size is not None:
            minimum = min(minimum, size)
        return cls(
            policy.failure_threshold,
            cast("float", policy.reset_timeout),
            policy.half_open_max_calls,
            policy.failure_rate,
            size,
            cast("float | None", span),
            minimum,
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """
    A change of a breaker's state, for events.

    Attributes:
        name: The breaker's name.
        from_state: ``"closed"``, ``"open"`` or ``"half_open"``.
        to_state: Idem.
        reason: Why, in words.
        consecutive_failures: Failures in a row when it happened.
        window_calls: Calls in the failure-rate window (0 without one).
        window_failures: Failures in the failure-rate window (0 without one).
    """

    name: str
    from_state: str
    to_state: str
    reason: str
    consecutive_failures: int
    window_calls: int
    window_failures: int


class Admission(NamedTuple):
    """
    The answer of ``admit``: whether a call may run, and what to tell a refused caller.

    Attributes:
        ticket: ``REFUSED`` (-1); 0 for a call in the closed state; > 0 for a probe (the
            half-open spell's number, handed back to ``record``).
        retry_after: Seconds until a probe is allowed (refusals only).
        open_for: Seconds since the breaker opened (refusals and probes).
        reason: Why it opened (refusals only).
        state: The state the caller met: ``"closed"``, ``"open"`` or ``"half_open"``.
        transition: The state change this admission caused (open to half-open), if any.
    """

    ticket: int
    retry_after: float = 0.0
    open_for: float = 0.0
    reason: str = ""
    state: str = "closed"
    transition: Transition | None = None


ADMITTED: Final = Admission(0)


@dataclass(frozen=True, slots=True)
class CircuitBreakerStats:
    """
    A snapshot of one breaker, from ``get_circuit_breaker(name).stats``.

    Attributes:
        name: The breaker's name.
        state: ``"closed"``, ``"open"`` or ``"half_open"`` (reported as soon as
            ``reset_timeout`` has passed, without waiting for a call).
        consecutive_failures: Failures in a row since the last success or state change.
        window_calls: Calls in the failure-rate window (0 without failure-rate mode).
        window_failures: Failures in the failure-rate window.
        failure_rate: ``window_failures / window_calls`` (None without calls or window).
        probes: Probe calls running now.
        opened_at: Wall-clock epoch seconds at which it last opened (None while closed).
        retry_after: Seconds until a probe is allowed (0.0 unless open).
        times_opened: How often it opened since it was created.
        failures: Failures recorded since it was created.
        rejected: Calls refused since it was created.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience"

    name: str
    state: str
    consecutive_failures: int
    window_calls: int
    window_failures: int
    failure_rate: float | None
    probes: int
    opened_at: float | None
    retry_after: float
    times_opened: int
    failures: int
    rejected: int


class BreakerBackend(Protocol):
    """
    The state of one named breaker in a store; every method is one atomic step.

    Methods read the time themselves (a Redis backend uses the server's clock, in one script
    round trip per method), and the state is plain numbers: the state code, the opening
    time, the consecutive count, the probe count, the spell number, the window's counts.

    The three attributes are hints for the decorator's fast path. ``closed``: True only if
    ``admit()`` would return ``ADMITTED`` (a backend that cannot know keeps it False).
    ``dirty``: False only if recording a success for ticket 0 would change nothing (keep it
    True if unsure). ``retired``: True once the store dropped this backend; the decorator
    then fetches a new one. A backend whose ``closed`` can be True must record cheaply and
    synchronously: the decorator's closed fast path calls ``record`` from async drivers too.

    Async drivers call the twins ``aadmit``/``arecord``, so a networked store does not
    block the event loop. A store that cannot be reached raises ``StoreUnavailableError``.
    """

    name: str
    config: BreakerConfig
    closed: bool
    dirty: bool
    retired: bool

    def admit(self) -> Admission:
        """Decide whether a call may start; reserve a probe slot if it is a probe."""

    def record(self, ticket: int, outcome: int) -> Transition | None:
        """Apply a call's outcome (``SUCCESS``, ``FAILURE``, ``IGNORED``); return any change."""

    async def aadmit(self) -> Admission:
        """The async twin of ``admit``."""

    async def arecord(self, ticket: int, outcome: int) -> Transition | None:
        """The async twin of ``record``."""

    def reset(self) -> Transition | None:
        """Close the breaker and clear its counts; return the change, if any."""

    def state(self) -> str:
        """Return ``"closed"``, ``"open"`` or ``"half_open"`` as of now."""

    def stats(self) -> CircuitBreakerStats:
        """Return a snapshot of the counts and the state as of now."""


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

    def clear(self) -> None:
        """Forget every call."""
        self._calls = [0] * self.buckets
        self._fails = [0] * self.buckets
        self._head = None
        self.calls = self.failures = 0


# -- the memory backend -----------------------------------------------------------------------

_live: weakref.WeakSet[MemoryBreaker] = weakref.WeakSet()


class MemoryBreaker:
    """
    ``BreakerBackend`` in this process's memory.

    Every step runs under one lock; the fast-path hints are read without it.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
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
        self._reason = ""
        self._times_opened = 0
        self._failures = 0
        self._rejected = 0
        _live.add(self)

    def _time(self) -> Clock:
        clock: Clock = self._clock or _clock._default.clock  # type: ignore[assignment]
        return clock

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

    def reset(self) -> Transition | None:
        """Close the breaker and clear its counts (the totals since creation stay)."""
        now = self._time().monotonic()
        with self._lock:
            before = self._state_at(now)
            if self._state == RETIRED:
                return None
            return self._close("reset by hand", before)

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
                return self._close("a probe call succeeded", "half_open")
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

    def _close(self, reason: str, before: str) -> Transition | None:
        transition = self._change(CLOSED, reason, before) if before != "closed" else None
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


def _memory_factory(key: str, policy: Any, store: Any) -> MemoryBreaker:
    return MemoryBreaker(key, policy, store)


MemoryStore.register("breaker", _memory_factory)


def _redis_factory(key: str, policy: Any, store: Any) -> BreakerBackend:
    from resilience.stores._redis_breaker import RedisBreaker  # noqa: PLC0415 - circular

    return RedisBreaker(key, policy, store)


def _redis_loader(key: str, store: Any) -> BreakerBackend | None:
    from resilience.stores._redis_breaker import RedisBreaker  # noqa: PLC0415 - circular

    return RedisBreaker.load(key, store)


RedisStore.register("breaker", _redis_factory)
RedisStore.register_loader("breaker", _redis_loader)

# -- the registry -----------------------------------------------------------------------------

# The live layers per store and name, so get_circuit_breaker(name) works after
# testing.reset() cleared the store while the decorated functions still exist.
_declared: weakref.WeakKeyDictionary[Any, dict[str, weakref.WeakSet[BreakerLayer]]] = (
    weakref.WeakKeyDictionary()
)


def _declared_policy(store: Any, name: str) -> CircuitBreakerPolicy | None:
    for layer in list(_declared.get(store, {}).get(name, ())):
        return layer.policy
    return None


def _declared_names(store: Any) -> set[str]:
    return {name for name, layers in _declared.get(store, {}).items() if layers}


def _backend_for(store: Any, name: str, policy: CircuitBreakerPolicy) -> BreakerBackend:
    """Return the shared backend for *name*, refusing a second, different declaration."""
    backend: BreakerBackend = store.backend("breaker", name, policy)
    wanted = BreakerConfig.of(policy)
    if backend.config != wanted:
        msg = (
            f"circuit breaker {name!r} is already declared with {backend.config}; breakers "
            f"sharing a name share one state, so they must agree (got {wanted})"
        )
        raise ValueError(msg)
    return backend


def _retire_orphans() -> None:
    """After a store was cleared, make the decorators holding its breakers fetch new ones."""
    for backend in list(_live):
        store = backend.store
        peek = getattr(store, "peek", None)
        if peek is not None and peek("breaker", backend.name) is not backend:
            backend.retire()


# Registered after MemoryStore's own clearer (imported above), so it runs after it.
_config.on_reset(_retire_orphans)


def _announce(transition: Transition) -> None:
    if BUS.subs:
        emit(
            "resilience.breaker.state_change",
            {
                "consecutive_failures": transition.consecutive_failures,
                "window_calls": transition.window_calls,
                "window_failures": transition.window_failures,
            },
            {
                "name": transition.name,
                "from": transition.from_state,
                "to": transition.to_state,
                "reason": transition.reason,
            },
        )


class CircuitBreaker:
    """
    A handle on one named breaker's shared state, from ``get_circuit_breaker(name)``.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience"
    __slots__ = ("name", "store")

    def __init__(self, name: str, store: Any = None) -> None:
        self.name = name
        self.store = DEFAULT_STORE if store is None else store

    def _backend(self) -> BreakerBackend:
        found: BreakerBackend | None = self.store.peek("breaker", self.name)
        if found is None:
            policy = _declared_policy(self.store, self.name)
            if policy is None:
                raise _unknown(self.name, self.store)
            found = _backend_for(self.store, self.name, policy)
        return found

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (as soon as ``reset_timeout`` passed)."""
        return self._backend().state()

    @property
    def stats(self) -> CircuitBreakerStats:
        """A snapshot of the state and the counts."""
        return self._backend().stats()

    def reset(self) -> None:
        """Close the breaker and clear its counts, for every function that shares it."""
        transition = self._backend().reset()
        if transition is not None:
            _announce(transition)

    def __repr__(self) -> str:
        try:
            state = self.state
        except KeyError:
            state = "unknown"
        return f"<CircuitBreaker {self.name!r} {state}>"


def _unknown(name: str, store: Any) -> KeyError:
    known = sorted({*store.keys("breaker"), *_declared_names(store)})
    return KeyError(
        f"no circuit breaker named {name!r} in {store!r}; known: {', '.join(known) or 'none'}"
    )


def get_circuit_breaker(name: str, *, store: Any = None) -> CircuitBreaker:
    """
    Return the breaker that every ``@circuit_breaker(name=name)`` shares.

    Args:
        name: The breaker's name (a decorated callable's qualified name if none was given).
        store: The store it lives in (default: this process's memory).

    Raises:
        KeyError: If no decorator declared a breaker of that name in that store.

    .. versionadded:: 0.1.0
    """
    where = DEFAULT_STORE if store is None else store
    if where.peek("breaker", name) is None and _declared_policy(where, name) is None:
        raise _unknown(name, where)
    return CircuitBreaker(name, where)


# -- the decorator ----------------------------------------------------------------------------


def _no_answer(exc: BaseException) -> Any:  # pragma: no cover - never called without fallback
    raise exc


class BreakerLayer(Layer):
    """``@circuit_breaker``'s layer: classifies outcomes and feeds them to the backend."""

    decorator = "circuit_breaker"
    __slots__ = ("__weakref__", "backend", "fallback", "is_failure", "on_result", "store")
    policy: CircuitBreakerPolicy

    def __init__(self, policy: CircuitBreakerPolicy) -> None:
        super().__init__(policy)
        self.store: Any = DEFAULT_STORE if policy.store is None else policy.store
        self.is_failure = policy._is_failure
        self.on_result = policy.on_result
        self.fallback = Fallback(policy.fallback) if policy.fallback is not None else None
        self.backend: BreakerBackend

    def bind(self, kind: Kind, qualname: str) -> None:
        policy = self.policy
        self.name = policy.name or qualname
        if policy.on_result is not None and kind in ("gen", "asyncgen"):
            msg = (
                f"@circuit_breaker(on_result=...) does not apply to generator functions "
                f"({qualname})"
            )
            raise TypeError(msg)
        if self.fallback is not None:
            self.fallback.check("circuit_breaker", kind, qualname)
        self.backend = _backend_for(self.store, self.name, policy)
        _declared.setdefault(self.store, {}).setdefault(self.name, weakref.WeakSet()).add(self)

    # -- shared steps (the slow path) ---------------------------------------------------------

    def _current(self) -> BreakerBackend:
        backend = self.backend
        if backend.retired:
            backend = self.backend = _backend_for(self.store, self.name, self.policy)
        return backend

    def _admit(self, backend: BreakerBackend) -> int | CircuitOpenError:
        """Return the call's ticket, or the error that refuses it."""
        try:
            admission = backend.admit()
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="circuit_breaker", fail_open=self.policy.fail_open)
            return UNGUARDED
        return self._admitted(admission)

    async def _aadmit(self, backend: BreakerBackend) -> int | CircuitOpenError:
        """The async twin of ``_admit``."""
        try:
            admission = await backend.aadmit()
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="circuit_breaker", fail_open=self.policy.fail_open)
            return UNGUARDED
        return self._admitted(admission)

    def _admitted(self, admission: Admission) -> int | CircuitOpenError:
        if admission.transition is not None:
            _announce(admission.transition)
        if admission.ticket >= 0:
            return admission.ticket
        clock: Clock = self.policy.clock or _clock._default.clock  # type: ignore[assignment]
        error = CircuitOpenError(
            self.name,
            admission.retry_after,
            opened_at=clock.time() - admission.open_for,
            reason=admission.reason,
            state=admission.state,
        )
        if BUS.subs:
            emit(
                "resilience.breaker.rejected",
                {"retry_after": error.retry_after},
                {"name": self.name, "state": admission.state, "reason": admission.reason},
            )
        return error

    def _record(self, backend: BreakerBackend, ticket: int, outcome: int) -> None:
        # The call has run: a store that cannot take its outcome is reported, never raised,
        # so the caller gets the call's own result or exception in either fail mode.
        if ticket == UNGUARDED:
            return
        try:
            transition = backend.record(ticket, outcome)
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="circuit_breaker", fail_open=True)
            return
        if transition is not None:
            _announce(transition)

    async def _arecord(self, backend: BreakerBackend, ticket: int, outcome: int) -> None:
        if ticket == UNGUARDED:
            return
        try:
            transition = await backend.arecord(ticket, outcome)
        except StoreUnavailableError as error:
            store_unavailable(error, decorator="circuit_breaker", fail_open=True)
            return
        if transition is not None:
            _announce(transition)

    def _judge_exception(self, exc: BaseException) -> tuple[int, BaseException | None]:
        """Return the outcome of a raised *exc*, and what the ``on`` predicate raised."""
        try:
            failed = self.is_failure(exc)
        except BaseException as error:  # re-raised by the caller, after recording
            return IGNORED, error
        if not failed or not _config.state.active:
            return IGNORED, None
        return FAILURE, None

    def _judge_result(self, result: Any) -> tuple[int, BaseException | None]:
        """Return the outcome of a returned *result* (``SUCCESS``/``FAILURE``), or what ``on_result`` raised."""
        on_result = self.on_result
        outcome = SUCCESS
        if on_result is not None:
            try:
                failed = on_result(result)
            except BaseException as error:  # re-raised by the caller, after recording
                return IGNORED, error
            if failed:
                outcome = FAILURE
        return outcome, None

    def _after_exception(self, backend: BreakerBackend, exc: BaseException, ticket: int) -> bool:
        """Record a raised exception; return whether the fallback answers for it."""
        outcome, error = self._judge_exception(exc)
        if outcome == FAILURE or ticket:
            self._record(backend, ticket, outcome)
        if error is not None:
            raise error
        return outcome == FAILURE and self.fallback is not None

    async def _aafter_exception(
        self, backend: BreakerBackend, exc: BaseException, ticket: int
    ) -> bool:
        """The async twin of ``_after_exception``."""
        outcome, error = self._judge_exception(exc)
        if outcome == FAILURE or ticket:
            await self._arecord(backend, ticket, outcome)
        if error is not None:
            raise error
        return outcome == FAILURE and self.fallback is not None

    def _after_result(self, backend: BreakerBackend, result: Any, ticket: int) -> None:
        """Record a returned value (a failure if ``on_result`` says so)."""
        outcome, error = self._judge_result(result)
        if error is not None:
            if ticket:
                self._record(backend, ticket, IGNORED)
            raise error
        if outcome == SUCCESS and ticket == 0 and not backend.dirty:
            return
        self._record(backend, ticket, outcome if _config.state.active else IGNORED)

    async def _aafter_result(self, backend: BreakerBackend, result: Any, ticket: int) -> None:
        """The async twin of ``_after_result``."""
        outcome, error = self._judge_result(result)
        if error is not None:
            if ticket:
                await self._arecord(backend, ticket, IGNORED)
            raise error
        if outcome == SUCCESS and ticket == 0 and not backend.dirty:
            return
        await self._arecord(backend, ticket, outcome if _config.state.active else IGNORED)

    # -- sync -----------------------------------------------------------------------------------

    def build_sync(self, call_next: Runner) -> Runner:
        layer = self
        after_exception = self._after_exception
        after_result = self._after_result
        slow = self._slow_sync
        answer = self.fallback.sync if self.fallback is not None else _no_answer

        if self.on_result is None and call_next is terminal:

            def direct(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                backend = layer.backend
                if backend.closed:
                    try:
                        result = wrapped(*args, **kwargs)
                    except BaseException as exc:
                        if after_exception(backend, exc, 0):
                            return answer(exc)
                        raise
                    if backend.dirty:
                        after_result(backend, result, 0)
                    return result
                return slow(call_next, wrapped, instance, args, kwargs)

            return direct

        checks_results = self.on_result is not None

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            backend = layer.backend
            if backend.closed:
                try:
                    result = call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    if after_exception(backend, exc, 0):
                        return answer(exc)
                    raise
                if checks_results or backend.dirty:
                    after_result(backend, result, 0)
                return result
            return slow(call_next, wrapped, instance, args, kwargs)

        return runner

    def _slow_sync(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend = self._current()
        if not _config.state.active:
            return call_next(wrapped, instance, args, kwargs)
        ticket = self._admit(backend)
        if isinstance(ticket, CircuitOpenError):
            if self.fallback is not None:
                return self.fallback.sync(ticket)
            raise ticket
        try:
            result = call_next(wrapped, instance, args, kwargs)
        except BaseException as exc:
            if self._after_exception(backend, exc, ticket):
                return self.fallback.sync(exc)  # type: ignore[union-attr]
            raise
        self._after_result(backend, result, ticket)
        return result

    # -- async ----------------------------------------------------------------------------------

    def build_async(self, call_next: Runner) -> Runner:
        layer = self
        after_exception = self._after_exception
        after_result = self._after_result
        slow = self._slow_async
        checks_results = self.on_result is not None
        fallback = self.fallback

        if call_next is terminal and not checks_results:

            async def direct(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                backend = layer.backend
                if backend.closed:
                    try:
                        result = await wrapped(*args, **kwargs)
                    except BaseException as exc:
                        if after_exception(backend, exc, 0):
                            return await fallback.asynchronous(exc)  # type: ignore[union-attr]
                        raise
                    if backend.dirty:
                        after_result(backend, result, 0)
                    return result
                return await slow(call_next, wrapped, instance, args, kwargs)

            return direct

        async def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            backend = layer.backend
            if backend.closed:
                try:
                    result = await call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    if after_exception(backend, exc, 0):
                        return await fallback.asynchronous(exc)  # type: ignore[union-attr]
                    raise
                if checks_results or backend.dirty:
                    after_result(backend, result, 0)
                return result
            return await slow(call_next, wrapped, instance, args, kwargs)

        return runner

    async def _slow_async(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend = self._current()
        if not _config.state.active:
            return await call_next(wrapped, instance, args, kwargs)
        ticket = await self._aadmit(backend)
        if isinstance(ticket, CircuitOpenError):
            if self.fallback is not None:
                return await self.fallback.asynchronous(ticket)
            raise ticket
        try:
            result = await call_next(wrapped, instance, args, kwargs)
        except BaseException as exc:
            if await self._aafter_exception(backend, exc, ticket):
                return await self.fallback.asynchronous(exc)  # type: ignore[union-attr]
            raise
        await self._aafter_result(backend, result, ticket)
        return result

    # -- generators (admitted on the first item; a consumer closing early is no failure) --------

    def build_gen(self, call_next: Runner) -> Runner:
        layer = self

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Generator[Any, Any, Any]:
            backend = layer._current()
            if not _config.state.active:
                return (yield from call_next(wrapped, instance, args, kwargs))
            ticket = layer._admit(backend)
            if isinstance(ticket, CircuitOpenError):
                raise ticket
            try:
                result = yield from call_next(wrapped, instance, args, kwargs)
            except GeneratorExit:
                layer._after_result(backend, None, ticket)
                raise
            except BaseException as exc:
                layer._after_exception(backend, exc, ticket)
                raise
            layer._after_result(backend, result, ticket)
            return result

        return runner

    def build_asyncgen(self, call_next: Runner) -> Runner:
        layer = self

        async def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> AsyncGenerator[Any, Any]:
            backend = layer._current()
            active = _config.state.active
            ticket = await layer._aadmit(backend) if active else 0
            if isinstance(ticket, CircuitOpenError):
                raise ticket
            agen = call_next(wrapped, instance, args, kwargs)
            step, argument = agen.asend, None
            try:
                while True:
                    try:
                        item = await step(argument)
                    except StopAsyncIteration:
                        break
                    try:
                        argument = yield item
                        step = agen.asend
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as thrown:  # forwarded into the generator
                        step, argument = agen.athrow, thrown
            except GeneratorExit:
                if active:
                    await layer._aafter_result(backend, None, ticket)
                raise
            except BaseException as exc:
                if active:
                    await layer._aafter_exception(backend, exc, ticket)
                raise
            if active:
                await layer._aafter_result(backend, None, ticket)

        return runner


class CircuitBreakerFields(TypedDict, total=False):
    """The keyword arguments ``@circuit_breaker(...)`` accepts: the policy's fields."""

    name: str | None
    failure_threshold: int
    reset_timeout: float | timedelta
    half_open_max_calls: int
    on: ExceptionFilter
    store: Any
    clock: Clock | None
    on_result: Callable[[Any], bool] | None
    fallback: Any
    failure_rate: float | None
    window_size: int | None
    window_duration: float | timedelta | None
    minimum_calls: int
    fail_open: bool


@overload
def circuit_breaker(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def circuit_breaker(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def circuit_breaker(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def circuit_breaker(
    policy: CircuitBreakerPolicy | None = None, /, **fields: Unpack[CircuitBreakerFields]
) -> Decorator[CircuitBreakerPolicy]: ...
def circuit_breaker(policy: Any = None, /, **fields: Any) -> Any:
    """
    Stop calling a failing dependency for a while, then probe it before trusting it again.

    Closed, calls pass and ``failure_threshold`` failures in a row (or, with
    ``failure_rate``, too high a share of failures in the window) open the breaker. Open,
    calls raise ``CircuitOpenError`` at once (or get the ``fallback``). After
    ``reset_timeout`` it is half-open: up to ``half_open_max_calls`` probe calls run at
    once; a probe's success closes it, a probe's failure opens it again.

    Use bare (``@circuit_breaker``), with a policy, or with the policy's fields. Breakers
    with the same ``name`` share one state; ``get_circuit_breaker(name)`` returns it.

    Args:
        policy: A ``CircuitBreakerPolicy``; keyword *fields* build one, or amend the one given.

    Raises:
        TypeError: At decoration time, for arguments of the wrong type, ``on_result`` or
            ``fallback`` on a generator function, or an async fallback on a sync function.
        ValueError: At decoration time, for out-of-range fields, or a name already declared
            with different numbers.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:  # bare @circuit_breaker
        return apply(BreakerLayer(CircuitBreakerPolicy()), policy)
    return Decorator(
        policy_from(CircuitBreakerPolicy, "circuit_breaker", policy, fields), BreakerLayer
    )
