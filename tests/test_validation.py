"""
Hostile numbers and types in every policy field: refused by name, or accepted and working.

Every field of every policy is fed ints up to 10**400, floats including nan, inf and 1e308,
bools, strings, timedeltas (negative ones too) and None. Each value is either refused when
the policy is built, with a ``ValueError`` or ``TypeError`` whose message names the field,
or accepted, and then the decorated function works end to end (sync and async, a failure
then a success) raising nothing but the caller's own error or one of ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resilience

from resilience import (
    AdaptiveLimit,
    Backoff,
    BoundedPolicy,
    CircuitBreakerPolicy,
    HedgingPolicy,
    RateLimitPolicy,
    ResilienceError,
    RetryBudget,
    RetryPolicy,
    RetryQuota,
    RetryThrottle,
    Stack,
    ThrottlePolicy,
    TracedPolicy,
    bounded,
    circuit_breaker,
    hedged,
    rate_limited,
    retry,
    throttled,
    traced,
)
from resilience._validate import MAX_DURATION
from resilience.testing import reset, virtual_time


HUGE = [10**400, -(10**400), 10**20, 2**63, 2**1024, 10**7 + 1, 10**9 + 1]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e7 + 0.5, 1e18, -0.0]

hostile: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(HUGE),
    st.sampled_from(SPECIAL_FLOATS),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-3, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["5", "1e400", "nan", "10", ""]),
    st.timedeltas(max_value=timedelta(0)),  # negative (and zero) durations
    st.timedeltas(min_value=timedelta(0)),
)


class Boom(ConnectionError):
    """The caller's own error."""


def _target() -> tuple[Callable[[], int], Callable[[], Any]]:
    """A sync and an async callable that fail on their first call and then return 42."""
    calls = {"sync": 0, "async": 0}

    def work() -> int:
        calls["sync"] += 1
        if calls["sync"] == 1:
            raise Boom
        return 42

    async def awork() -> int:
        calls["async"] += 1
        if calls["async"] == 1:
            raise Boom
        return 42

    return work, awork


def _end_to_end(decorator: Callable[[Any], Any], field: str = "") -> None:
    """
    Call through *decorator* twice, sync and async: only an answer, Boom or our errors.

    Decorating may refuse a target (``attempt_timeout`` on a sync function), but only with
    a ``ValueError``/``TypeError`` naming *field*.
    """
    work, awork = _target()
    for target in (work, awork):
        try:
            decorated = decorator(target)
        except (ValueError, TypeError) as error:
            _refused_by_name(error, "decorating", field or "(no field)")
            continue
        for _ in range(2):
            try:
                if target is work:
                    decorated()
                else:
                    asyncio.run(decorated())
            except (Boom, ResilienceError):
                continue


def _refused_by_name(error: Exception, owner: str, *fields: str) -> None:
    """*error* is a ValueError/TypeError naming one of *fields* (a relation names either)."""
    assert isinstance(error, ValueError | TypeError), repr(error)
    assert any(field in str(error) for field in fields), f"{owner}.{fields}: {error}"


def _under_retry(value: Any) -> Callable[[Any], Any]:
    """A value object (a budget, a quota, a backoff) exercised under a retry."""
    field = "backoff" if isinstance(value, Backoff) else "budget"
    return retry(RetryPolicy(attempts=3, **{field: value}))


def _hedge(policy: HedgingPolicy) -> Callable[[Any], Any]:
    """``@hedged`` takes async callables only: a sync target is passed through as it is."""

    def decorate(target: Any) -> Any:
        return hedged(policy)(target) if inspect.iscoroutinefunction(target) else target

    return decorate


# policy class -> (how to exercise a built policy, the fields that make a valid base policy,
# the fields checked against each other: a refusal may name any of them)
POLICIES: dict[type[Any], tuple[Callable[[Any], Any], dict[str, Any], tuple[str, ...]]] = {
    RetryPolicy: (retry, {"backoff": Backoff(base=0.01, max=0.1)}, ()),
    CircuitBreakerPolicy: (circuit_breaker, {"name": "hostile"}, ()),
    RateLimitPolicy: (rate_limited, {"rate": 5, "key": "hostile"}, ()),
    BoundedPolicy: (bounded, {"limit": 2, "key": "hostile"}, ()),
    TracedPolicy: (traced, {"name": "hostile", "log": False}, ()),
    Stack: (lambda stack: stack, {"bounded": BoundedPolicy(limit=2, key="hostile-stack")}, ()),
    ThrottlePolicy: (throttled, {"key": "hostile-throttle"}, ()),
    HedgingPolicy: (_hedge, {"delay": 0.01, "name": "hostile-hedge"}, ()),
    Backoff: (_under_retry, {}, ()),
    RetryBudget: (_under_retry, {"key": "hostile-budget"}, ()),
    RetryQuota: (_under_retry, {"key": "hostile-quota"}, ()),
    RetryThrottle: (_under_retry, {"key": "hostile-throttle-tokens"}, ()),
    AdaptiveLimit: (
        lambda limit: bounded(BoundedPolicy(limit=limit, key="hostile-adaptive")),
        {},
        ("initial", "min_limit", "max_limit"),
    ),
}

# exported frozen dataclasses that are read-outs, not policies a user builds
READ_OUTS = {"Snapshot", "BreakerSnapshot", "BudgetSnapshot", "LimiterSnapshot", "PoolSnapshot"}
READ_OUTS |= {"ThrottleSnapshot"}
READ_OUTS |= {"CircuitBreakerStats"}


def _exported_policies() -> set[type[Any]]:
    found = set()
    for name in resilience.__all__:
        obj = getattr(resilience, name)
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and name not in READ_OUTS:
            if obj.__dataclass_params__.frozen:  # type: ignore[attr-defined]
                found.add(obj)
    return found


def test_every_exported_policy_is_fed_hostile_values() -> None:
    """A policy added to ``resilience`` without an entry here fails this test."""
    assert _exported_policies() == set(POLICIES)


def _fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


CASES = [(cls, *POLICIES[cls], name) for cls in POLICIES for name in _fields(cls)]


@pytest.fixture(autouse=True)
def _isolated() -> Any:
    yield
    reset()


@pytest.mark.parametrize(
    ("cls", "decorator", "base", "related", "field"),
    CASES,
    ids=[f"{cls.__name__}.{field}" for cls, _, _, _, field in CASES],
)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile)
def test_policy_field(
    cls: type[Any],
    decorator: Callable[[Any], Any],
    base: dict[str, Any],
    related: tuple[str, ...],
    field: str,
    value: Any,
) -> None:
    """A hostile value is refused naming the field, or accepted and working end to end."""
    reset()
    fields = {**base, field: value}
    try:
        policy = cls(**fields)
    except Exception as error:
        _refused_by_name(error, cls.__name__, *(related if field in related else (field,)))
        return
    with virtual_time():
        _end_to_end(lambda target: decorator(policy)(target), field)


BACKOFF_FIELDS = ["base", "max", "multiplier", "jitter_amount", "strategy", "jitter"]


@pytest.mark.parametrize("field", BACKOFF_FIELDS)
@settings(max_examples=60)
@given(value=hostile, jitter=st.sampled_from(["factor", "additive", "full", "none"]))
def test_backoff_field(field: str, value: Any, jitter: str) -> None:
    """Backoff refuses a hostile value by name, or gives finite delays in [0, max]."""
    fields: dict[str, Any] = {"jitter": jitter, field: value}
    try:
        backoff = Backoff(**fields)
    except Exception as error:
        _refused_by_name(error, "Backoff", field)
        return
    for number in (0, 1, 10, 1000, 10**6):
        if backoff.strategy == "decorrelated":
            break
        delay = backoff.delay(number, 0.5)
        assert 0.0 <= delay <= backoff.max
    delays = backoff.delays(lambda: 0.5)
    for _ in range(50):
        delay = next(delays)
        assert 0.0 <= delay <= backoff.max
    reset()
    with virtual_time():
        _end_to_end(retry(RetryPolicy(attempts=3, backoff=backoff)))


class TestDurations:
    @pytest.mark.parametrize("value", [10**400, 1e18, MAX_DURATION * 2, timedelta(days=200)])
    def test_above_the_maximum_is_refused(self, value: object) -> None:
        """A duration past 10**7 s is a ValueError naming the field and the limit."""
        with pytest.raises(ValueError, match=r"RetryPolicy\.timeout must be .*10000000 seconds"):
            RetryPolicy(timeout=value)  # type: ignore[arg-type]

    def test_the_maximum_itself_is_accepted(self) -> None:
        """10**7 s is still a duration."""
        assert MAX_DURATION == RetryPolicy(timeout=MAX_DURATION).timeout

    def test_huge_int_count_names_the_field(self) -> None:
        """10**400 attempts is a ValueError naming attempts, never an OverflowError."""
        with pytest.raises(ValueError, match=r"RetryPolicy\.attempts must be >= 1 \(and at most"):
            RetryPolicy(attempts=10**400)

    def test_huge_int_number_names_the_field(self) -> None:
        """A huge multiplier is a ValueError naming multiplier."""
        with pytest.raises(ValueError, match=r"Backoff\.multiplier must be >= 1"):
            Backoff(multiplier=10**400)

    def test_message_is_short(self) -> None:
        """The refused value is quoted cut short, not as 401 digits."""
        with pytest.raises(ValueError, match=r"Backoff\.base") as info:
            Backoff(base=10**400)
        assert len(str(info.value)) < 200


class TestRetryAfterCap:
    @pytest.mark.parametrize("cls", [RetryPolicy, RateLimitPolicy])
    @pytest.mark.parametrize("zero", [0, 0.0, timedelta(0)])
    def test_zero_is_refused(self, cls: type[Any], zero: object) -> None:
        """retry_after_cap=0 would make every server delay a hot loop: refused, saying why."""
        extra = {"rate": 1} if cls is RateLimitPolicy else {}
        with pytest.raises(ValueError, match=r"retry_after_cap must be > 0.*delay_hook=None"):
            cls(retry_after_cap=zero, **extra)

    def test_delay_hook_none_ignores_server_delays(self) -> None:
        """The documented way to ignore server delays: the backoff is used."""
        sleeps: list[float] = []
        with virtual_time() as clock:

            @retry(attempts=3, delay_hook=None, backoff=Backoff(base=1.0, jitter="none"))
            def work() -> None:
                raise Boom

            with pytest.raises(Boom):
                work()
            sleeps = clock.sleeps
        assert [1.0, 2.0] == sleeps


JUNK = ["5", 10**400, math.nan, math.inf, -1.0, -1, True, object(), [1.0], b"5"]
JUNK_IDS = ["str", "huge-int", "nan", "inf", "negative-float", "negative-int", "bool"]
JUNK_IDS += ["object", "list", "bytes"]


class TestDelayHook:
    @pytest.mark.parametrize("junk", JUNK, ids=JUNK_IDS)
    def test_junk_is_ignored_and_the_backoff_used(self, junk: object) -> None:
        """A hook returning junk is ignored (with an event); the caller's error survives."""
        events: list[resilience.telemetry.Event] = []
        resilience.telemetry.attach(events.append, ["resilience.delay_hook."])
        error = Boom()
        with virtual_time() as clock:

            @retry(attempts=2, delay_hook=lambda _: junk, backoff=Backoff(base=1.0, jitter="none"))
            def work() -> None:
                raise error

            with pytest.raises(Boom) as info:
                work()
        assert error is info.value
        assert [1.0] == clock.sleeps
        assert 1 == len(events)
        assert "retry" == events[0].metadata["decorator"]
        assert "not a finite number" in events[0].metadata["reason"]

    def test_raising_hook_is_ignored(self) -> None:
        """A hook that raises is ignored (with an event); the caller's error survives."""
        events: list[resilience.telemetry.Event] = []
        resilience.telemetry.attach(events.append, ["resilience.delay_hook."])

        def hook(_: object) -> float:
            raise ZeroDivisionError

        with virtual_time() as clock:

            @retry(attempts=2, delay_hook=hook, backoff=Backoff(base=1.0, jitter="none"))
            def work() -> None:
                raise Boom

            with pytest.raises(Boom):
                work()
        assert [1.0] == clock.sleeps
        assert "raised ZeroDivisionError" in events[0].metadata["reason"]

    @pytest.mark.parametrize("junk", JUNK, ids=JUNK_IDS)
    def test_junk_never_opens_a_rate_window(self, junk: object) -> None:
        """A rate limiter's hook returning junk leaves the window shut and the error intact."""

        @rate_limited(rate=10, key="junk-hook", delay_hook=lambda _: junk)
        def work() -> None:
            raise Boom

        with virtual_time(), pytest.raises(Boom):
            work()
        assert 0.0 == resilience.backoff_window("junk-hook").remaining()

    def test_a_good_value_still_works(self) -> None:
        """A finite positive delay replaces the backoff, capped."""
        with virtual_time() as clock:

            @retry(attempts=2, delay_hook=lambda _: 7, retry_after_cap=5.0)
            def work() -> None:
                raise Boom

            with pytest.raises(Boom):
                work()
        assert [5.0] == clock.sleeps


class TestFromEnv:
    def test_blank_is_refused_naming_the_variable(self) -> None:
        """A blank variable is not "unlimited": it is an error naming the variable."""
        with pytest.raises(ValueError, match="APP_ATTEMPTS is set but blank"):
            RetryPolicy.from_env("APP_", {"APP_ATTEMPTS": "  "})

    @pytest.mark.parametrize("digits", ["\u0663", "1\u0660", "\uff15", "\u00b2"])
    def test_non_ascii_digits_are_refused(self, digits: str) -> None:
        """Digits other than 0-9 are an error naming the variable."""
        with pytest.raises(ValueError, match="APP_ATTEMPTS holds non-ASCII digits"):
            RetryPolicy.from_env("APP_", {"APP_ATTEMPTS": digits})

    def test_huge_number_is_refused(self) -> None:
        """A number of thousands of digits is refused naming the variable."""
        with pytest.raises(ValueError, match="APP_ATTEMPTS holds a number of more than"):
            RetryPolicy.from_env("APP_", {"APP_ATTEMPTS": "9" * 5000})

    def test_text_field_holds_digits(self) -> None:
        """A key or a name made of digits stays text."""
        assert "12345" == RateLimitPolicy.from_env("R_", {"R_RATE": "3", "R_KEY": "12345"}).key
        assert "007" == RetryPolicy.from_env("R_", {"R_NAME": "007"}).name

    def test_none_word_still_means_none_for_numbers(self) -> None:
        """'none' written out is still how to say "unbounded"."""
        assert RetryPolicy.from_env("R_", {"R_ATTEMPTS": "none"}).attempts is None


class TestHugeServerDelays:
    def test_transport_caps_a_huge_retry_after(self) -> None:
        """Retry-After: 10**11 s neither breaks the request nor holds the window past the cap."""
        import httpx

        from resilience import Stack
        from resilience.transport import ResilientTransport, window_key
        from tests.httpserver import serve

        stack = Stack(retry=RetryPolicy(attempts=1, retry_after_cap=30.0))
        with serve() as (base, _server), virtual_time():
            transport = ResilientTransport(stack)
            with httpx.Client(transport=transport) as client:
                response = client.get(f"{base}/status/503?Retry-After=99999999999")
            assert 503 == response.status_code
            url = httpx.URL(f"{base}/status/503")
            remaining = resilience.backoff_window(window_key(url)).remaining()
            assert 0.0 < remaining <= 30.0
