"""
The contract between ``@circuit_breaker`` and the stores that keep a breaker's state.

``BreakerBackend`` is the protocol every store's backend implements (``MemoryBreaker`` in
``_breaker.memory``, ``RedisBreaker`` in ``_breaker.redis``); this module also holds
the values that cross it: the state and outcome codes, ``BreakerConfig`` (a breaker's
numbers), ``Admission`` (the answer to ``admit``), ``Transition`` (a state change, for
events) and ``CircuitBreakerStats`` (a snapshot). Nothing here keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, cast


if TYPE_CHECKING:
    from resilience._policies import CircuitBreakerPolicy
    from resilience._snapshot import BreakerSnapshot


__all__ = [
    "ADMITTED",
    "CLOSED",
    "FAILURE",
    "HALF_OPEN",
    "IGNORED",
    "OPEN",
    "REFUSED",
    "RETIRED",
    "STATE_NAMES",
    "SUCCESS",
    "UNGUARDED",
    "Admission",
    "BreakerBackend",
    "BreakerConfig",
    "CircuitBreakerStats",
    "Transition",
]

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
        ...

    def record(self, ticket: int, outcome: int) -> Transition | None:
        """Apply a call's outcome (``SUCCESS``, ``FAILURE``, ``IGNORED``); return any change."""
        ...

    async def aadmit(self) -> Admission:
        """The async twin of ``admit``."""
        ...

    async def arecord(self, ticket: int, outcome: int) -> Transition | None:
        """The async twin of ``record``."""
        ...

    def reset(self) -> Transition | None:
        """Close the breaker and clear its counts; return the change, if any."""
        ...

    def state(self) -> str:
        """Return ``"closed"``, ``"open"`` or ``"half_open"`` as of now."""
        ...

    def stats(self) -> CircuitBreakerStats:
        """Return a snapshot of the counts and the state as of now."""
        ...

    def snapshot(self) -> BreakerSnapshot:
        """Return the operator's view of the breaker as of now, changing nothing."""
        ...
