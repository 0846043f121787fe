"""tenacity in and out: RetryPolicy.from_tenacity and RetryPolicy.to_tenacity, against the real package."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import pytest
import tenacity

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, RetryBudget, RetryPolicy, retry
from resilience.testing import FakeClock


def _state(attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return state


def _outcome_state(outcome: object) -> tenacity.RetryCallState:
    state = _state(1)
    if isinstance(outcome, BaseException):
        state.set_exception((type(outcome), outcome, None))
    else:
        state.set_result(outcome)
    return state


def _retried_by_us(policy: RetryPolicy, outcome: object) -> bool:
    """Whether @retry with *policy* calls again after *outcome* (two attempts, no waiting)."""
    calls = []

    @retry(
        RetryPolicy(attempts=2, on=policy.on, on_result=policy.on_result, backoff=Backoff(base=0))
    )
    def once():
        calls.append(1)
        if len(calls) == 1:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return "second"

    try:
        once()
    except BaseException:
        pass
    return len(calls) == 2


class Boom(Exception):
    pass


class TestWaits:
    @given(
        multiplier=st.floats(0.01, 10.0),
        growth=st.floats(1.0, 4.0),
        cap=st.floats(0.01, 1000.0),
    )
    def test_exponential_gives_tenacity_delays(self, multiplier, growth, cap):
        """wait_exponential's delay after attempt n is Backoff.delay(n - 1), to the last bit."""
        wait = tenacity.wait_exponential(multiplier=multiplier, max=cap, exp_base=growth)
        backoff = RetryPolicy.from_tenacity(wait=wait).backoff
        for attempt in range(1, 40):
            assert math.isclose(wait(_state(attempt)), backoff.delay(attempt - 1), rel_tol=1e-9)

    @given(low=st.floats(0.0, 50.0), width=st.floats(0.0, 50.0))
    def test_random_has_tenacity_range(self, low, width):
        """wait_random(min, max) becomes a delay drawn from the same [min, max] range."""
        wait = tenacity.wait_random(min=low, max=low + width)
        backoff = RetryPolicy.from_tenacity(wait=wait).backoff
        got_low, got_high = backoff.bounds(3)
        assert math.isclose(low, got_low, abs_tol=1e-9)
        assert math.isclose(low + width, got_high, abs_tol=1e-9)
        for _ in range(20):
            assert got_low - 1e-9 <= wait(_state(4)) <= got_high + 1e-9

    def test_random_exponential_is_full_jitter(self):
        """wait_random_exponential draws from [0, the exponential delay], like jitter='full'."""
        wait = tenacity.wait_random_exponential(multiplier=0.5, max=8)
        backoff = RetryPolicy.from_tenacity(wait=wait).backoff
        assert "full" == backoff.jitter
        plain = tenacity.wait_exponential(multiplier=0.5, max=8)
        for attempt in range(1, 10):
            assert (0.0, plain(_state(attempt))) == backoff.bounds(attempt - 1)

    @pytest.mark.parametrize(
        "wait",
        [
            tenacity.wait_none(),
            tenacity.wait_fixed(1.5),
            tenacity.wait_incrementing(start=2, increment=2, max=7),
            tenacity.wait_incrementing(start=3, increment=0),
            tenacity.wait_exponential_jitter(multiplier=0.5, max=10, jitter=0),
            tenacity.wait_fixed(1) + tenacity.wait_fixed(0.5),
            tenacity.wait_exponential(multiplier=2, max=1),
            tenacity.wait_exponential(multiplier=1, min=0.5, max=30),
            Backoff(base=0.25, jitter="none"),
        ],
        ids=lambda v: type(v).__name__,
    )
    def test_deterministic_waits_match(self, wait):
        """Every deterministic tenacity wait maps to the same delays, attempt by attempt."""
        backoff = RetryPolicy.from_tenacity(wait=wait).backoff
        assert [wait(_state(n)) for n in range(1, 12)] == [backoff.delay(n) for n in range(11)]

    def test_fixed_plus_random_is_one_uniform_range(self):
        """wait_fixed(3) + wait_random(0, 2): uniform in [3, 5]."""
        wait = tenacity.wait_fixed(3) + tenacity.wait_random(0, 2)
        assert (3.0, 5.0) == RetryPolicy.from_tenacity(wait=wait).backoff.bounds(0)

    @pytest.mark.parametrize(
        ("wait", "named"),
        [
            (tenacity.wait_chain(tenacity.wait_fixed(1), tenacity.wait_fixed(2)), "wait_chain"),
            (tenacity.wait_exponential_jitter(jitter=1), "jitter=1"),
            (tenacity.wait_incrementing(start=0, increment=1), "start=0"),
            (tenacity.wait_exponential(multiplier=1, min=5, max=60), "min=5"),
            (tenacity.wait_random_exponential(multiplier=1, min=1), "min=1"),
            (tenacity.wait_random(0, 1) + tenacity.wait_random(0, 1), "wait_random"),
            (tenacity.wait_exception(lambda exc: tenacity.wait_fixed(1)), "wait_exception"),
        ],
        ids=lambda v: v if isinstance(v, str) else type(v).__name__,
    )
    def test_unmapped_waits_are_named(self, wait, named):
        """A wait without an equivalent fails, naming it and what to use instead."""
        with pytest.raises(ValueError, match="no RetryPolicy equivalent") as info:
            RetryPolicy.from_tenacity(wait=wait)
        assert named in str(info.value)


class TestStops:
    @pytest.mark.parametrize(
        ("stop", "attempts", "timeout"),
        [
            (tenacity.stop_after_attempt(4), 4, None),
            (tenacity.stop_after_delay(30), None, 30.0),
            (tenacity.stop_before_delay(12), None, 12.0),
            (tenacity.stop_never, None, None),
            (tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(10), 5, 10.0),
            (
                tenacity.stop_after_attempt(5)
                | tenacity.stop_after_attempt(3)
                | tenacity.stop_before_delay(9)
                | tenacity.stop_after_delay(4),
                3,
                4.0,
            ),
            (tenacity.stop_all(tenacity.stop_after_attempt(2)), 2, None),
        ],
        ids=lambda v: type(v).__name__,
    )
    def test_limits(self, stop, attempts, timeout):
        """Stops become attempts and timeout; of several limits the first reached wins."""
        policy = RetryPolicy.from_tenacity(stop=stop)
        assert (attempts, timeout) == (policy.attempts, policy.timeout)

    def test_attempts_count_the_same_calls(self, clock):
        """stop_after_attempt(n) and attempts=n both make n calls in all."""
        tenacity_calls, our_calls = [], []
        stop = tenacity.stop_after_attempt(3)
        with pytest.raises(Boom):
            tenacity.Retrying(stop=stop, sleep=lambda s: None, reraise=True)(
                lambda: tenacity_calls.append(1) or (_ for _ in ()).throw(Boom())
            )

        @retry(RetryPolicy.from_tenacity(stop=stop))
        def ours():
            our_calls.append(1)
            raise Boom

        with pytest.raises(Boom):
            ours()
        assert 3 == len(tenacity_calls) == len(our_calls)

    @pytest.mark.parametrize(
        "stop",
        [
            tenacity.stop_after_attempt(2) & tenacity.stop_after_delay(1),
            tenacity.stop_when_event_set(__import__("threading").Event()),
        ],
        ids=lambda v: type(v).__name__,
    )
    def test_unmapped_stops_are_named(self, stop):
        """stop_all of several limits, or an event, fails with a clear error."""
        with pytest.raises(ValueError, match=r"stop.*no RetryPolicy equivalent"):
            RetryPolicy.from_tenacity(stop=stop)


OUTCOMES = [
    Boom("x"),
    OSError("disk"),
    ValueError("retry me"),
    RuntimeError("other"),
    KeyError("k"),
    None,
    0,
    503,
    "ok",
]


def _caused_by_os() -> Exception:
    exc = RuntimeError("wrapped")
    exc.__cause__ = OSError("root")
    return exc


class TestRetries:
    @pytest.mark.parametrize(
        "strategy",
        [
            tenacity.retry_if_exception_type(),
            tenacity.retry_if_exception_type((OSError, Boom)),
            tenacity.retry_if_not_exception_type(OSError),
            tenacity.retry_unless_exception_type(Boom),
            tenacity.retry_if_exception(lambda exc: "x" in str(exc)),
            tenacity.retry_if_exception_message(message="retry me"),
            tenacity.retry_if_exception_message(match="di"),
            tenacity.retry_if_not_exception_message(message="retry me"),
            tenacity.retry_if_exception_cause_type(OSError),
            tenacity.retry_if_result(lambda r: r is None),
            tenacity.retry_if_not_result(lambda r: r == "ok"),
            tenacity.retry_always,
            tenacity.retry_never,
            tenacity.retry_if_exception_type(OSError)
            | tenacity.retry_if_result(lambda r: r == 503),
            tenacity.retry_if_exception_type(Exception)
            & tenacity.retry_if_not_exception_type(KeyError),
            tenacity.retry_if_result(lambda r: r is not None)
            & tenacity.retry_if_not_result(lambda r: r == 0),
            tenacity.retry_if_exception_type(OSError) & tenacity.retry_if_result(bool),
        ],
        ids=lambda v: type(v).__name__,
    )
    def test_same_verdict_on_every_outcome(self, strategy, clock):
        """For each exception and result, @retry retries exactly when tenacity's strategy does."""
        policy = RetryPolicy.from_tenacity(retry=strategy)
        for outcome in [*OUTCOMES, _caused_by_os()]:
            assert strategy(_outcome_state(outcome)) == _retried_by_us(policy, outcome), outcome

    def test_plain_exception_types_stay_readable(self):
        """retry_if_exception_type(E) becomes on=E itself."""
        assert (OSError, Boom) == RetryPolicy.from_tenacity(
            retry=tenacity.retry_if_exception_type((OSError, Boom))
        ).on

    def test_a_custom_strategy_is_named(self):
        """A callable of tenacity's retry state cannot be read; the error says what to use."""
        with pytest.raises(ValueError, match=r"retry=function .*on= .*on_result="):
            RetryPolicy.from_tenacity(retry=lambda state: True)


class TestRetrying:
    def test_a_whole_retrying_runs_the_same(self, clock):
        """A Retrying's calls and waits are the policy's, run side by side."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(5),
            wait=tenacity.wait_exponential(multiplier=0.5, max=3),
            retry=tenacity.retry_if_exception_type(OSError),
            reraise=True,
        )
        tenacity_waits: list[float] = []
        tenacity_calls: list[int] = []

        def flaky(calls):
            calls.append(1)
            if len(calls) < 5:
                raise OSError("down")
            return "ok"

        assert "ok" == retrying.copy(sleep=tenacity_waits.append)(flaky, tenacity_calls)
        our_calls: list[int] = []
        assert "ok" == retry(RetryPolicy.from_tenacity(retrying))(flaky)(our_calls)
        assert tenacity_waits == clock.sleeps == [0.5, 1.0, 2.0, 3.0]
        assert 5 == len(our_calls)

    def test_async_retrying_and_a_decorated_function(self):
        """AsyncRetrying and @tenacity.retry functions are read the same way."""
        retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(2), name="fetch")

        @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(1))
        def fetch():
            return "ok"

        assert ("fetch", 2) == (
            RetryPolicy.from_tenacity(retrying).name,
            RetryPolicy.from_tenacity(retrying).attempts,
        )
        policy = RetryPolicy.from_tenacity(fetch, name="fetch")
        assert (2, 1.0, "fetch") == (policy.attempts, policy.backoff.base, policy.name)

    def test_fields_win_over_mapped_ones(self):
        """Keyword fields replace what the strategies gave, and add what tenacity lacks."""
        budget = RetryBudget()
        policy = RetryPolicy.from_tenacity(
            stop=tenacity.stop_after_attempt(3), attempts=7, budget=budget, delay_hook=None
        )
        assert (7, budget, None) == (policy.attempts, policy.budget, policy.delay_hook)

    @pytest.mark.parametrize(
        ("argument", "value"),
        [
            ("before_sleep", lambda state: None),
            ("before", lambda state: None),
            ("after", lambda state: None),
            ("retry_error_callback", lambda state: None),
        ],
    )
    def test_unmapped_callbacks_are_named(self, argument, value):
        """A Retrying with hooks our policy cannot hold fails, naming the hook."""
        with pytest.raises(ValueError, match=f"{argument}=.*no RetryPolicy equivalent"):
            RetryPolicy.from_tenacity(tenacity.Retrying(**{argument: value}))

    def test_not_a_retrying(self):
        """Anything else is a TypeError naming what is accepted."""
        with pytest.raises(TypeError, match="takes a tenacity Retrying or AsyncRetrying"):
            RetryPolicy.from_tenacity(3)


class TestToTenacity:
    def test_tenacity_retries_as_the_policy(self, clock):
        """tenacity.Retrying(**policy.to_tenacity()) makes the same calls and waits as @retry."""
        policy = RetryPolicy(
            attempts=5,
            backoff=Backoff(base=0.5, max=3, jitter="none"),
            on=OSError,
            on_result=lambda r: r is None,
        )
        script = [OSError("down"), None, OSError("again"), "ok"]

        def run(calls):
            answer = script[len(calls)]
            calls.append(1)
            if isinstance(answer, Exception):
                raise answer
            return answer

        waits: list[float] = []
        tenacity_calls: list[int] = []
        kwargs = policy.to_tenacity()
        assert "ok" == tenacity.Retrying(**kwargs, sleep=waits.append)(run, tenacity_calls)
        our_calls: list[int] = []
        assert "ok" == retry(policy)(run)(our_calls)
        assert waits == clock.sleeps == [0.5, 1.0, 2.0]
        assert len(tenacity_calls) == len(our_calls) == 4

    def test_giving_up_reraises_or_returns_like_retry(self):
        """No RetryError: the last exception itself, or the last result."""
        policy = RetryPolicy(attempts=2, backoff=Backoff(base=0), on_result=lambda r: r == 503)
        kwargs = policy.to_tenacity()
        boom = Boom("last")
        with pytest.raises(Boom) as info:
            tenacity.Retrying(**kwargs)(lambda: (_ for _ in ()).throw(boom))
        assert boom is info.value
        assert 503 == tenacity.Retrying(**kwargs)(lambda: 503)

    def test_retry_after_still_paces_tenacity(self):
        """The default delay hook comes along: a Retry-After header sets tenacity's wait."""

        class Throttled(Exception):
            headers = {"retry-after": "2"}

        policy = RetryPolicy(
            attempts=2, backoff=Backoff(base=0.1, jitter="none"), retry_after_cap=1.5
        )
        waits: list[float] = []
        with pytest.raises(Throttled):
            tenacity.Retrying(**policy.to_tenacity(), sleep=waits.append)(
                lambda: (_ for _ in ()).throw(Throttled())
            )
        assert [1.5] == waits
        plain = RetryPolicy(attempts=2, backoff=Backoff(base=0.1, jitter="none"), delay_hook=None)
        assert plain.backoff is plain.to_tenacity()["wait"]

    def test_stop_from_attempts_and_timeout(self):
        """attempts and timeout become stop_after_attempt | stop_before_delay."""
        stop = RetryPolicy(attempts=4, timeout=9).to_tenacity()["stop"]
        assert isinstance(stop, tenacity.stop_any)
        assert [4, 9.0] == [
            getattr(part, "max_attempt_number", getattr(part, "max_delay", None))
            for part in stop.stops
        ]
        assert tenacity.stop_never is RetryPolicy(attempts=None).to_tenacity()["stop"]

    @pytest.mark.anyio
    async def test_async_with_the_policy_clock(self):
        """With a clock, AsyncRetrying sleeps on it (its asleep when asynchronous=True)."""
        clock = FakeClock()
        policy = RetryPolicy(attempts=3, backoff=Backoff(base=1, jitter="none"), clock=clock)
        calls: list[int] = []

        async def flaky():
            calls.append(1)
            if len(calls) < 3:
                raise OSError
            await asyncio.sleep(0)
            return "ok"

        assert "ok" == await tenacity.AsyncRetrying(**policy.to_tenacity(asynchronous=True))(flaky)
        assert [1.0, 2.0] == clock.sleeps

    @pytest.mark.parametrize(
        "field",
        [
            {"progress_timeout": 5},
            {"attempt_timeout": 5},
            {"fallback": "cached"},
            {"budget": RetryBudget()},
        ],
        ids=lambda f: next(iter(f)),
    )
    def test_unmapped_fields_are_named(self, field):
        """A policy using what tenacity cannot do refuses, naming the field."""
        with pytest.raises(ValueError, match=f"{next(iter(field))}= does not map to tenacity"):
            RetryPolicy(**field).to_tenacity()

    def test_round_trip_keeps_the_numbers(self):
        """from_tenacity(to_tenacity(p)) keeps attempts, timeout and the backoff."""
        policy = RetryPolicy(attempts=6, timeout=30, backoff=Backoff(base=0.2, max=5))
        back = RetryPolicy.from_tenacity(stop=policy.to_tenacity()["stop"], wait=policy.backoff)
        assert (6, 30.0, policy.backoff) == (back.attempts, back.timeout, back.backoff)


def test_import_resilience_does_not_import_tenacity():
    """tenacity is an extra: loading the package never imports it."""
    code = "import sys, resilience; assert 'tenacity' not in sys.modules, 'tenacity imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
