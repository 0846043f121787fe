"""Backoff: the contract's formulas, exact bounds, no overflow, tenacity interop."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

from datetime import timedelta

import pytest
import tenacity

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff
from resilience._backoff import JITTERS

from .strategies import backoffs, jitter_amounts, rands, retry_numbers


def raw(b: Backoff, retry: int) -> float:
    """The contract's step 1 and 2, written out independently for checking."""
    if b.strategy == "exponential":
        if b.base == 0:
            return 0.0
        try:
            return min(b.base * b.multiplier**retry, b.max)
        except OverflowError:  # the power alone overflows: compare in log space
            log_raw = math.log(b.base) + retry * math.log(b.multiplier)
            return b.max if log_raw >= math.log(b.max) else math.exp(log_raw)
    if b.strategy == "linear":
        return min(b.base * (retry + 1), b.max)
    return b.base


def jittered(b: Backoff, d: float, r: float) -> float:
    """The contract's step 3 and 4."""
    a = b.jitter_amount
    value = {
        "none": d,
        "factor": d * (1 - a * r),
        "range": d * (1 - a + 2 * a * r),
        "additive": d * (1 + a * r),
        "full": d * r,
        "equal": d / 2 + d * r / 2,
    }[b.jitter]
    return min(max(value, 0.0), b.max)


class TestDefaults:
    def test_tinker_schedule(self):
        """The defaults give 0.5, 1, 2, 4, 8, 10, 10 at r=0 (factor jitter only shortens)."""
        b = Backoff()
        assert [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0] == [b.delay(n, 0.0) for n in range(7)]

    def test_tinker_jitter_band(self):
        """Each default delay lies in (0.75 d, d]."""
        b = Backoff()
        for n, d in enumerate([0.5, 1, 2, 4, 8, 10, 10]):
            low, high = b.bounds(n)
            assert (0.75 * d, float(d)) == (low, high)
            assert 0.75 * d < b.delay(n, 0.999999) <= d

    def test_zero_base_never_waits(self):
        """A zero base means no waiting at all, whatever the jitter."""
        for jitter in JITTERS:
            b = Backoff(base=0, max=0, jitter=jitter, jitter_amount=0.5)
            assert 0.0 == b.delay(5, 0.7)

    def test_timedelta_durations(self):
        """Durations may be timedeltas; they are stored as float seconds."""
        b = Backoff(base=timedelta(milliseconds=250), max=timedelta(seconds=2))
        assert (0.25, 2.0) == (b.base, b.max)


class TestFormulas:
    @given(b=backoffs(), retry=retry_numbers(), r=rands())
    def test_exact_formula(self, b, retry, r):
        """delay() is exactly the contract's formula for every strategy and jitter."""
        assert jittered(b, raw(b, retry), r) == b.delay(retry, r)

    @given(b=backoffs(), retry=retry_numbers(), r=rands())
    def test_bounds_hold(self, b, retry, r):
        """Every delay lies within bounds(retry), which lies within [0, max]."""
        low, high = b.bounds(retry)
        assert 0.0 <= low <= b.delay(retry, r) <= high <= b.max

    @given(b=backoffs(), retry=retry_numbers())
    def test_bounds_are_tight(self, b, retry):
        """bounds() is attained at r=0 and approached as r nears 1."""
        low, high = b.bounds(retry)
        ends = {b.delay(retry, 0.0), b.delay(retry, math.nextafter(1.0, 0.0))}
        # r can only approach 1, so an end is off by about one ulp of 1.0 times the delay
        ulps = max(1e-12, 4 * b.max * math.ulp(1.0))
        assert low == min(ends) or math.isclose(low, min(ends), rel_tol=1e-9, abs_tol=ulps)
        assert high == max(ends) or math.isclose(high, max(ends), rel_tol=1e-9, abs_tol=ulps)

    @given(b=backoffs(), r=rands())
    def test_no_overflow_up_to_a_million(self, b, r):
        """Retry numbers up to 10**6 (and beyond) give finite delays without raising."""
        for retry in (10**3, 10**6, 10**9):
            assert math.isfinite(b.delay(retry, r))

    @given(
        base=st.floats(0.001, 10),
        multiplier=st.floats(1.0, 5.0),
        retry=st.integers(0, 200),
    )
    def test_exponential_is_monotone_before_jitter(self, base, multiplier, retry):
        """With no jitter, exponential delays never shrink from one retry to the next."""
        b = Backoff(base=base, max=base * 1000, multiplier=multiplier, jitter="none")
        assert b.delay(retry) <= b.delay(retry + 1)

    @pytest.mark.parametrize("jitter", ["factor", "range", "additive"])
    @given(data=st.data())
    def test_amount_scales_band(self, jitter, data):
        """The jitter band's width is a * d (2 a d for range), before clamping."""
        a = data.draw(jitter_amounts(jitter))
        b = Backoff(base=1.0, max=1000.0, jitter=jitter, jitter_amount=a, strategy="constant")
        low, high = b.bounds(0)
        width = 2 * a if jitter == "range" else a
        assert math.isclose(width, high - low, abs_tol=1e-12)

    def test_tiny_base_with_overflowing_power(self):
        """A power that overflows on its own does not force the cap when the base is tiny."""
        b = Backoff(base=2.2250738585e-313, max=1.0, multiplier=10.0, jitter="none")
        assert math.isclose(2.2250738585e-4, b.delay(309), rel_tol=1e-9)
        assert 1.0 == b.delay(400)

    def test_linear_and_constant(self):
        """Linear grows by base each retry, constant stays put."""
        lin = Backoff(strategy="linear", base=1, max=3, jitter="none")
        const = Backoff(strategy="constant", base=2, max=5, jitter="none")
        assert [1.0, 2.0, 3.0, 3.0] == [lin.delay(n) for n in range(4)]
        assert [2.0, 2.0] == [const.delay(0), const.delay(10**6)]

    def test_additive_clamped_at_max(self):
        """Additive jitter only raises the delay, and never past max."""
        b = Backoff(base=10, max=10, jitter="additive", jitter_amount=0.5)
        assert (10.0, 10.0) == b.bounds(3)

    def test_random_draw_when_rand_omitted(self):
        """Without rand, delays vary within the bounds."""
        b = Backoff(base=1, max=1, jitter="full")
        draws = {b.delay(0) for _ in range(50)}
        assert len(draws) > 1
        assert all(0.0 <= d <= 1.0 for d in draws)


class TestDelays:
    @given(b=backoffs(), seed=st.integers(0, 2**32))
    def test_delays_match_delay(self, b, seed):
        """delays(rand) yields delay(n, rand()) retry by retry."""
        draws = random.Random(seed)
        expected_draws = random.Random(seed)
        got = list(itertools.islice(b.delays(draws.random), 20))
        assert [b.delay(n, expected_draws.random()) for n in range(20)] == got

    @given(
        base=st.floats(0.0, 10.0),
        extra=st.floats(0.0, 100.0),
        seed=st.integers(0, 2**32),
    )
    def test_decorrelated_formula(self, base, extra, seed):
        """Decorrelated: next = min(max, base + r (3 previous - base)), previous from base."""
        b = Backoff(strategy="decorrelated", base=base, max=base + extra)
        rng, oracle = random.Random(seed), random.Random(seed)
        previous = base
        for n, got in enumerate(itertools.islice(b.delays(rng.random), 30)):
            expected = min(b.max, base + oracle.random() * (3 * previous - base))
            assert expected == got
            low, high = b.bounds(n)
            assert low <= got <= high
            previous = got

    def test_decorrelated_delay_is_refused(self):
        """delay() on a decorrelated schedule says to use delays()."""
        with pytest.raises(ValueError, match=r"delays\(\)"):
            Backoff(strategy="decorrelated").delay(0, 0.5)

    def test_bad_rand_from_callable(self):
        """A rand() outside [0, 1) is an error naming the range."""
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            next(Backoff().delays(lambda: 1.0))


class TestValidation:
    @pytest.mark.parametrize(
        ("fields", "match"),
        [
            ({"base": -1}, r"Backoff\.base must be >= 0"),
            ({"base": 5, "max": 1}, r"Backoff\.max must be >= base"),
            ({"multiplier": 0.5}, r"Backoff\.multiplier must be >= 1"),
            ({"jitter": "wild"}, r"Backoff\.jitter must be one of"),
            ({"strategy": "fibonacci"}, r"Backoff\.strategy must be one of"),
            ({"jitter_amount": 1.5}, r"Backoff\.jitter_amount must be in \[0, 1\]"),
            ({"jitter": "additive", "jitter_amount": -0.1}, r"jitter_amount must be >= 0"),
            ({"max": math.inf}, r"Backoff\.max must be a finite"),
            ({"base": math.nan}, r"Backoff\.base must be a finite"),
        ],
    )
    def test_bad_values_name_the_field(self, fields, match):
        """Out-of-range values raise ValueError naming the field and the range."""
        with pytest.raises(ValueError, match=match):
            Backoff(**fields)

    def test_wrong_type(self):
        """A non-number duration is a TypeError naming the field."""
        with pytest.raises(TypeError, match=r"Backoff\.base"):
            Backoff(base="1")  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
    def test_bad_retry_number(self, bad):
        """delay() takes whole numbers >= 0 only."""
        with pytest.raises((TypeError, ValueError), match="retry must be a whole number"):
            Backoff().delay(bad)

    @pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0])
    def test_bad_rand(self, bad):
        """rand must lie in [0, 1)."""
        with pytest.raises(ValueError, match=r"rand must be in \[0, 1\)"):
            Backoff().delay(0, bad)


class TestDataclass:
    def test_frozen_replace_eq_repr(self):
        """Backoff is a frozen dataclass: replace, ==, repr and hash work."""
        b = Backoff()
        c = dataclasses.replace(b, base=1.0)
        assert Backoff(base=1.0) == c
        assert b != c
        assert "Backoff(strategy='exponential', base=0.5" in repr(b)
        assert hash(Backoff()) == hash(b)
        with pytest.raises(dataclasses.FrozenInstanceError):
            b.base = 2.0  # type: ignore[misc]

    def test_replace_revalidates(self):
        """replace() runs the same validation as construction."""
        with pytest.raises(ValueError, match="max must be >= base"):
            dataclasses.replace(Backoff(), base=100.0)

    def test_from_dict_and_back(self):
        """from_dict(to_dict()) round-trips; unknown keys are named."""
        b = Backoff(strategy="linear", base=0.1, max=2, jitter="full")
        assert b == Backoff.from_dict(b.to_dict())
        with pytest.raises(ValueError, match="unknown Backoff field.*: bse"):
            Backoff.from_dict({"bse": 1})

    def test_from_env(self):
        """from_env reads PREFIX_FIELD variables and parses numbers and names."""
        env = {"APP_BACKOFF_BASE": "0.25", "APP_BACKOFF_JITTER": "full", "OTHER": "x"}
        assert Backoff(base=0.25, jitter="full") == Backoff.from_env("APP_BACKOFF_", env)


class TestTenacity:
    def test_as_wait_strategy(self):
        """A Backoff works as tenacity's wait=, retry number = attempt_number - 1."""
        slept: list[float] = []
        calls = []

        @tenacity.retry(
            wait=Backoff(jitter="none"),
            stop=tenacity.stop_after_attempt(4),
            sleep=slept.append,
            reraise=True,
        )
        def flaky():
            calls.append(1)
            if len(calls) < 4:
                raise OSError

        flaky()
        assert [0.5, 1.0, 2.0] == slept

    def test_decorrelated_as_wait_strategy(self):
        """Decorrelated schedules work under tenacity and stay within bounds."""
        slept: list[float] = []
        b = Backoff(strategy="decorrelated", base=1, max=100)

        @tenacity.retry(wait=b, stop=tenacity.stop_after_attempt(6), sleep=slept.append)
        def always():
            raise OSError

        with pytest.raises(tenacity.RetryError):
            always()
        assert 5 == len(slept)
        for n, delay in enumerate(slept):
            low, high = b.bounds(n)
            assert low <= delay <= high
