"""
The policy layer: frozen dataclasses that every decorator reads.

Each policy validates itself when built (so bad input fails at decoration time, naming the
field and the accepted range), accepts ``float`` seconds or ``timedelta`` for durations,
and can be built from a plain mapping (``from_dict``) or the environment (``from_env``).
``dataclasses.replace``, ``==`` and ``repr`` work as on any dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from resilience._backoff import Backoff
from resilience._bounded.adaptive import AdaptiveLimit
from resilience._budget.quota import RetryQuota, RetryThrottle
from resilience._budget.state import RetryBudget
from resilience._dictable import FromDict
from resilience._fallback import check_fallback
from resilience._retry_after import retry_after_from
from resilience._validate import (
    check_bool,
    check_int,
    check_number,
    check_store,
    duration,
    exception_predicate,
    optional_callable,
)
from resilience.typing import Clock, ExceptionFilter


__all__ = ["BoundedPolicy", "CircuitBreakerPolicy", "RateLimitPolicy", "RetryPolicy"]


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _retry_after_cap(owner: str, value: object) -> float | None:
    """
    ``retry_after_cap`` is > 0: a cap of 0 would turn every server delay into no wait at all.

    A server-given delay of 0 means "use the backoff" (so a server cannot cause a hot loop);
    a cap of 0 would cut every delay down to a zero wait, the very loop that rule prevents.
    Ignoring server delays has its own spelling: ``delay_hook=None``.
    """
    if (isinstance(value, int | float) and not isinstance(value, bool) and value == 0) or (
        isinstance(value, timedelta) and not value
    ):
        msg = (
            f"{owner}.retry_after_cap must be > 0 seconds (a cap of 0 would turn every "
            f"server delay into a zero wait, a hot loop); to ignore server delays, "
            f"set delay_hook=None; got {value!r}"
        )
        raise ValueError(msg)
    return duration(owner, "retry_after_cap", value, strict=True)


def _check_clock(owner: str, clock: object) -> None:
    if clock is not None and not isinstance(clock, Clock):
        msg = (
            f"{owner}.clock must provide monotonic(), time(), sleep() and asleep() "
            f"(see resilience.typing.Clock), got {type(clock).__name__}"
        )
        raise TypeError(msg)


@dataclass(frozen=True, slots=True)
class RetryPolicy(FromDict):
    """
    How ``@retry`` retries: how often, for how long, on what, and how long to wait.

    Args:
        attempts: The most calls in all (3 = one call and two retries); None: unbounded.
        timeout: The most seconds from the first call's start; no wait may end past it:
            when the next wait would cross it, give up at once.
        progress_timeout: Give up when no call of the decorated function has succeeded for
            this long (progress is shared by all its in-flight calls).
        backoff: The delay schedule.
        on: The exceptions to retry: a class, a tuple of classes, or a predicate.
        on_result: A predicate ``result -> bool``: retry when it returns True.
        delay_hook: ``outcome -> seconds | None``, a server-given delay that replaces the
            backoff for that wait (None or 0: use the backoff). Default: Retry-After.
        retry_after_cap: The most seconds a server-given delay may impose (> 0; to ignore
            server delays, set *delay_hook* to None).
        attempt_timeout: The most seconds one attempt of an async callable may take; a
            stalled attempt is cancelled and counts as a retryable failure.
        name: A name for events and log lines (default: the callable's qualified name).
        clock: Where time is read and how waits happen (default: the process's clock).
        fallback: Answer instead of raising when the retry gives up on an exception: a
            value, or a callable (sync or async) that receives the exception. None: raise.
        budget: A ``RetryBudget``, ``RetryQuota`` or ``RetryThrottle`` shared with other
            policies: retries stop when it is spent.

    .. versionadded:: 0.1.0
    """

    attempts: int | None = 10
    timeout: float | timedelta | None = None
    progress_timeout: float | timedelta | None = None
    backoff: Backoff = field(default_factory=Backoff)
    on: ExceptionFilter = Exception
    on_result: Callable[[Any], bool] | None = None
    delay_hook: Callable[[Any], float | None] | None = retry_after_from
    retry_after_cap: float | timedelta = 60.0
    attempt_timeout: float | timedelta | None = None
    name: str | None = None
    clock: Clock | None = None
    fallback: Any = None
    budget: RetryBudget | RetryQuota | RetryThrottle | None = None
    _retryable: Callable[[BaseException], bool] = field(
        init=False,
        repr=False,
        compare=False,
        default=None,  # type: ignore[assignment]
    )

    def __post_init__(self) -> None:
        owner = "RetryPolicy"
        check_int(owner, "attempts", self.attempts, low=1, allow_none=True)
        for name in ("timeout", "progress_timeout", "attempt_timeout"):
            _set(
                self,
                name,
                duration(owner, name, getattr(self, name), strict=True, allow_none=True),
            )
        _set(self, "retry_after_cap", _retry_after_cap(owner, self.retry_after_cap))
        if not isinstance(self.backoff, Backoff):
            msg = f"{owner}.backoff must be a Backoff, got {type(self.backoff).__name__}"
            raise TypeError(msg)
        _set(self, "_retryable", exception_predicate(owner, "on", self.on))
        optional_callable(owner, "on_result", self.on_result)
        optional_callable(owner, "delay_hook", self.delay_hook)
        if self.name is not None and not isinstance(self.name, str):
            msg = f"{owner}.name must be a string or None, got {type(self.name).__name__}"
            raise TypeError(msg)
        _check_clock(owner, self.clock)
        check_fallback(owner, self.fallback)
        if self.budget is not None and not isinstance(
            self.budget, RetryBudget | RetryQuota | RetryThrottle
        ):
            msg = (
                f"{owner}.budget must be a RetryBudget, RetryQuota, RetryThrottle or None, "
                f"got {type(self.budget).__name__}"
            )
            raise TypeError(msg)

    # -- tenacity interop (needs the tenacity extra) --------------------------------------

    @classmethod
    def from_tenacity(
        cls,
        source: object = None,
        /,
        *,
        stop: object = None,
        wait: object = None,
        retry: object = None,
        **fields: Any,
    ) -> RetryPolicy:
        """
        Build the policy that retries as a tenacity ``Retrying`` or its strategies do.

        Args:
            source: A ``tenacity.Retrying``/``AsyncRetrying``, or a function decorated with
                ``@tenacity.retry``; None to give the strategies alone.
            stop: A stop strategy (``stop_after_attempt``, ``stop_after_delay``,
                ``stop_before_delay``, ``stop_never``, and ``|`` of them): ``attempts`` and
                ``timeout``. Replaces *source*'s.
            wait: A wait strategy (``wait_none``, ``wait_fixed``, ``wait_random``,
                ``wait_exponential``, ``wait_random_exponential``, ``wait_incrementing``,
                ``wait_exponential_jitter(jitter=0)``, sums of fixed and one random part, or
                a ``Backoff``): ``backoff``. Replaces *source*'s.
            retry: A retry strategy (``retry_if_exception_type``, ``retry_if_exception``,
                ``retry_if_result``, their negations, ``retry_if_exception_message``,
                ``retry_if_exception_cause_type``, ``retry_always``/``never`` and ``|``/``&``
                of them): ``on`` and ``on_result``. Replaces *source*'s.
            fields: Any other ``RetryPolicy`` field; these win over the mapped ones.

        Raises:
            ValueError: For a strategy or argument without an equivalent, naming it and what
                to use instead (``before_sleep``, ``wait_chain``, ``stop_all`` of two...).
            TypeError: When *source* is not a tenacity retrying object.

        Fields tenacity has no notion of keep their defaults: ``delay_hook`` still honours
        Retry-After (pass ``delay_hook=None`` for tenacity's waits exactly).

        .. versionadded:: 0.1.0
        """
        from resilience import _tenacity  # noqa: PLC0415 - tenacity only when asked for

        mapped = _tenacity.policy_fields(source, stop=stop, wait=wait, retry=retry)
        return cls(**(mapped | fields))

    def to_tenacity(self, *, asynchronous: bool = False) -> dict[str, Any]:
        """
        Return keyword arguments for ``tenacity.Retrying``/``AsyncRetrying``/``retry`` that retry as this policy.

        ``stop`` from ``attempts`` and ``timeout`` (``stop_before_delay``), ``wait`` the
        ``Backoff`` (behind the ``delay_hook``, so Retry-After still paces waits), ``retry``
        from ``on`` and ``on_result``, and ``retry_error_callback`` re-raising the last
        exception or returning the last result, as ``@retry`` does. With a ``clock``,
        ``sleep`` is its ``sleep`` (its ``asleep`` when *asynchronous*).

        Raises:
            ValueError: When the policy sets ``progress_timeout``, ``attempt_timeout``,
                ``fallback`` or ``budget``, which tenacity cannot do.

        .. versionadded:: 0.1.0
        """
        from resilience import _tenacity  # noqa: PLC0415 - tenacity only when asked for

        return _tenacity.tenacity_kwargs(self, asynchronous=asynchronous)


RetryPolicy._nested = {"backoff": Backoff, "budget": RetryBudget}


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy(FromDict):
    """
    How ``@circuit_breaker`` decides to stop calling a failing dependency.

    Args:
        name: Breakers with the same name share one state (default: the callable's name).
        failure_threshold: Consecutive failures that open the breaker (>= 1).
        reset_timeout: Seconds the breaker stays open before allowing probes (> 0).
        half_open_max_calls: Probe calls allowed at once while half-open (>= 1).
        on: The exceptions that count as failures: a class, a tuple, or a predicate.
            Other exceptions pass through and count as neither success nor failure.
        store: Where the state lives (default: this process's memory).
        clock: Where time is read (default: the process's clock).
        on_result: A predicate ``result -> bool``: True counts the returned value as a
            failure (such as a 5xx response); the value is still returned.
        fallback: Answer instead of raising when the breaker refuses a call or the call
            fails with an exception matching *on*: a value, or a callable (sync or async)
            that receives the exception. None: raise.
        failure_rate: Switch to failure-rate mode: open when at least this share of the
            calls in the window failed, in (0, 1]; *failure_threshold* is then unused.
        window_size: Failure-rate mode over the last N calls (default 100 if neither
            window is given).
        window_duration: Failure-rate mode over the last T seconds (in steps of T/10).
        minimum_calls: The fewest calls the window must hold before the rate can open the
            breaker (capped at *window_size*).
        fail_open: When the *store* cannot be reached in time, let calls run unguarded
            (and emit ``resilience.store.unavailable``) instead of raising
            ``StoreUnavailableError``.

    .. versionadded:: 0.1.0
    """

    name: str | None = None
    failure_threshold: int = 5
    reset_timeout: float | timedelta = 30.0
    half_open_max_calls: int = 1
    on: ExceptionFilter = Exception
    store: Any = None
    clock: Clock | None = None
    on_result: Callable[[Any], bool] | None = None
    fallback: Any = None
    failure_rate: float | None = None
    window_size: int | None = None
    window_duration: float | timedelta | None = None
    minimum_calls: int = 10
    fail_open: bool = False
    _is_failure: Callable[[BaseException], bool] = field(
        init=False,
        repr=False,
        compare=False,
        default=None,  # type: ignore[assignment]
    )

    def __post_init__(self) -> None:
        owner = "CircuitBreakerPolicy"
        if self.name is not None and not isinstance(self.name, str):
            msg = f"{owner}.name must be a string or None, got {type(self.name).__name__}"
            raise TypeError(msg)
        check_int(owner, "failure_threshold", self.failure_threshold, low=1)
        _set(
            self,
            "reset_timeout",
            duration(owner, "reset_timeout", self.reset_timeout, strict=True),
        )
        check_int(owner, "half_open_max_calls", self.half_open_max_calls, low=1)
        _set(self, "_is_failure", exception_predicate(owner, "on", self.on))
        _check_clock(owner, self.clock)
        optional_callable(owner, "on_result", self.on_result)
        check_fallback(owner, self.fallback)
        _check_failure_rate(self)
        check_bool(owner, "fail_open", self.fail_open)
        check_store(owner, self.store)


def _check_failure_rate(policy: CircuitBreakerPolicy) -> None:
    owner = "CircuitBreakerPolicy"
    if policy.failure_rate is not None:
        check_number(owner, "failure_rate", policy.failure_rate, low=0.0, high=1.0, low_open=True)
    # the count window is a ring of one byte per call: a million calls is 1 MB
    check_int(owner, "window_size", policy.window_size, low=1, high=1_000_000, allow_none=True)
    _set(
        policy,
        "window_duration",
        duration(owner, "window_duration", policy.window_duration, strict=True, allow_none=True),
    )
    check_int(owner, "minimum_calls", policy.minimum_calls, low=1)
    if policy.window_size is not None and policy.window_duration is not None:
        msg = (
            f"{owner} takes window_size (the last N calls) or window_duration (the last T "
            f"seconds), not both; got {policy.window_size!r} and {policy.window_duration!r}"
        )
        raise ValueError(msg)
    if policy.failure_rate is None and (
        policy.window_size is not None or policy.window_duration is not None
    ):
        msg = f"{owner}.window_size and window_duration need failure_rate (a share in (0, 1])"
        raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class RateLimitPolicy(FromDict):
    """
    How many calls ``@rate_limited`` lets start: at most *rate* in any window of *per* s.

    Args:
        rate: Calls per window, a whole number >= 1.
        per: The window in seconds (> 0).
        burst: At most *burst* starts in any window of ``per * burst / rate`` seconds
            (1 <= burst <= rate; default *rate*). ``burst=1`` spaces calls evenly.
        key: Limiters with the same key share one budget (default: the callable's name).
        wait: Wait for a turn (True) or raise ``RateLimitedError`` at once (False).
        timeout: The most seconds to wait for a turn (None: no limit).
        store: Where the budget lives (default: this process's memory).
        clock: Where time is read and how waits happen (default: the process's clock).
        delay_hook: ``exc -> seconds | None``: a server-given delay read from a failed
            call, which opens the key's shared backoff window (default: Retry-After;
            None: failures never open it).
        retry_after_cap: The most seconds one server-given delay may hold the window open
            (> 0; to ignore server delays, set *delay_hook* to None).
        fail_open: When the *store* cannot be reached in time, let calls start without a
            token (and emit ``resilience.store.unavailable``) instead of raising
            ``StoreUnavailableError``.
        cost: Units of *rate* one call takes: an int >= 1, or a callable given the call's
            arguments that returns one (such as an estimate of an LLM request's tokens).
        settle: A callable given the call's result that returns the units really used
            (or None to keep the estimate); the difference is given back to, or charged
            to, the budget as of the call's start.
        pace_from_headers: Read the quota a server advertises (``RateLimit``,
            ``x-ratelimit-*``, ``anthropic-ratelimit-*``) on every result and exception;
            when one has nothing left, open the key's backoff window until it resets.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *cost*, *settle* and *pace_from_headers*.
    """

    rate: int
    per: float | timedelta = 1.0
    burst: int | None = None
    key: str | None = None
    wait: bool = True
    timeout: float | timedelta | None = None
    store: Any = None
    clock: Clock | None = None
    delay_hook: Callable[[Any], float | None] | None = retry_after_from
    retry_after_cap: float | timedelta = 60.0
    fail_open: bool = False
    cost: int | Callable[..., int] = 1
    settle: Callable[[Any], int | None] | None = None
    pace_from_headers: bool = False

    def __post_init__(self) -> None:
        owner = "RateLimitPolicy"
        check_int(owner, "rate", self.rate, low=1)
        _set(self, "per", duration(owner, "per", self.per, strict=True))
        check_int(owner, "burst", self.burst, low=1, high=self.rate, allow_none=True)
        if self.key is not None and not isinstance(self.key, str):
            msg = f"{owner}.key must be a string or None, got {type(self.key).__name__}"
            raise TypeError(msg)
        check_bool(owner, "wait", self.wait)
        _set(self, "timeout", duration(owner, "timeout", self.timeout, allow_none=True))
        _check_clock(owner, self.clock)
        optional_callable(owner, "delay_hook", self.delay_hook)
        _set(self, "retry_after_cap", _retry_after_cap(owner, self.retry_after_cap))
        check_bool(owner, "fail_open", self.fail_open)
        check_store(owner, self.store)
        if not callable(self.cost):
            check_int(owner, "cost", self.cost, low=1)
            if self.cost > self.rate:
                msg = (
                    f"{owner}.cost ({self.cost}) must be <= rate ({self.rate}) or no call "
                    f"could ever start"
                )
                raise ValueError(msg)
        optional_callable(owner, "settle", self.settle)
        check_bool(owner, "pace_from_headers", self.pace_from_headers)


@dataclass(frozen=True, slots=True)
class BoundedPolicy(FromDict):
    """
    How many units of weight ``@bounded`` lets run at once.

    Args:
        limit: The pool's size in units, a whole number >= 1, or an ``AdaptiveLimit``
            whose live limit moves with latency and drops (see ``get_bounded``).
        key: Decorators with the same key share one pool (default: the callable's name).
        weight: Units one call holds while it runs (1 <= weight <= limit).
        timeout: The most seconds to wait for permits (None: forever).
        store: Where the pool lives (default: this process's memory).
        clock: Where time is read (default: the process's clock).
        fail_open: When the *store* cannot be reached in time, let calls run without
            permits (and emit ``resilience.store.unavailable``) instead of raising
            ``StoreUnavailableError``.

    .. versionadded:: 0.1.0
    """

    limit: int | AdaptiveLimit
    key: str | None = None
    weight: int = 1
    timeout: float | timedelta | None = None
    store: Any = None
    clock: Clock | None = None
    fail_open: bool = False

    def __post_init__(self) -> None:
        owner = "BoundedPolicy"
        if isinstance(self.limit, AdaptiveLimit):
            lowest, what = self.limit.min_limit, "limit.min_limit"
        else:
            check_int(owner, "limit", self.limit, low=1)
            lowest, what = self.limit, "limit"
        if self.key is not None and not isinstance(self.key, str):
            msg = f"{owner}.key must be a string or None, got {type(self.key).__name__}"
            raise TypeError(msg)
        check_int(owner, "weight", self.weight, low=1)
        if self.weight > lowest:
            msg = (
                f"{owner}.weight must be <= {what} ({lowest}) or no call could ever run, "
                f"got {self.weight}"
            )
            raise ValueError(msg)
        _set(self, "timeout", duration(owner, "timeout", self.timeout, allow_none=True))
        _check_clock(owner, self.clock)
        check_bool(owner, "fail_open", self.fail_open)
        check_store(owner, self.store)


BoundedPolicy._nested = {"limit": AdaptiveLimit}
