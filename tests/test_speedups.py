"""The optional C accelerator of ``deadline``: the same rules as the pure-Python core."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import _clock, _deadline, deadline, remaining
from resilience._rate.state import MemoryRateBackend, WeightedStart, weighted_start
from resilience._rate.window import MemoryWindowBackend
from resilience.testing import FakeClock, virtual_time


BUILT = importlib.util.find_spec("resilience._speedups") is not None
SWITCHED_OFF = bool(os.environ.get("RESILIENCE_NO_EXTENSIONS"))
ROOT = Path(__file__).parent.parent


class _Pure(_deadline._PurePython):
    """The pure-Python core, beside the C one in the same process."""

    __slots__ = ()


def test_the_accelerator_is_used_when_built() -> None:
    """Built and not switched off: ``deadline`` is made, entered and left in C."""
    if not BUILT:
        pytest.skip("no C compiler where this package was installed: pure Python")
    assert _deadline.ACCELERATED is not SWITCHED_OFF
    assert (deadline.__mro__[1].__module__ == "resilience._speedups") is not SWITCHED_OFF


lengths = st.one_of(
    st.floats(min_value=0.0, max_value=1e6),
    st.integers(min_value=0, max_value=10**6),
    st.builds(timedelta, seconds=st.floats(min_value=0.0, max_value=1e5)),
    st.just(math.inf),
)


def _nest(make: type, values: list[object], clock: FakeClock) -> list[tuple[float, int]]:
    """Enter a deadline per value, a tick apart; return each one's end and governing index."""
    entered: list[object] = []
    seen: list[tuple[float, int]] = []
    for value in values:
        scope = make(value)
        scope.__enter__()
        entered.append(scope)
        seen.append((scope.at, entered.index(scope.owner)))
        clock.advance(0.25)
    for scope in reversed(entered):
        scope.__exit__(None, None, None)
    return seen


@given(st.lists(lengths, min_size=1, max_size=6))
def test_nesting_matches_the_pure_python_core(values: list[object]) -> None:
    """The same ends and the same governing deadline, whichever core made them."""
    with virtual_time(FakeClock(start=10.0)) as clock:
        accelerated = _nest(deadline, values, clock)
    with virtual_time(FakeClock(start=10.0)) as clock:
        pure = _nest(_Pure, values, clock)
    assert accelerated == pure
    assert remaining() is None


@pytest.mark.parametrize(
    "value", [-1.0, -1, math.nan, 1e300, 10**400, "2", None, True, timedelta(seconds=-1)]
)
def test_bad_lengths_raise_the_same_error(value: object) -> None:
    """Bad input is refused when the deadline is made, with the pure core's words."""
    with pytest.raises((TypeError, ValueError)) as pure:
        _Pure(value)
    with pytest.raises(type(pure.value), match="deadline.seconds") as accelerated:
        deadline(value)
    assert str(accelerated.value) == str(pure.value)


def test_the_call_takes_one_positional_length() -> None:
    """No length, two, or a keyword: a TypeError, as a Python __init__ would give."""
    for args, kwargs in (((), {}), ((1.0, 2.0), {}), ((), {"seconds": 1.0})):
        with pytest.raises(TypeError):
            deadline(*args, **kwargs)


def test_where_names_the_line_that_made_it() -> None:
    """Both cores remember the code and offset; the line is worked out when asked."""
    line = sys._getframe().f_lineno + 1
    made, pure = deadline(1.0), _Pure(1.0)
    assert made.where == f"{__file__}:{line}"
    assert pure._code is not None
    assert _deadline._line(pure._code, pure._lasti) == line


def test_a_fresh_copy_keeps_length_and_origin() -> None:
    """What ``@deadline`` enters for each call: the template's length and where."""
    template = deadline(2.5)
    fresh = template._fresh()
    assert type(fresh) is deadline
    assert (fresh.seconds, fresh.where) == (template.seconds, template.where)
    assert not hasattr(fresh, "owner")  # set on entering, by either core
    with fresh:
        assert fresh.owner is fresh


def test_virtual_time_moves_the_accelerated_deadline(clock: FakeClock) -> None:
    """The C core reads the default clock in force, not the system's."""
    clock.advance(100.0)
    with deadline(3.0) as scope:
        assert scope.at == 103.0
        clock.advance(1.0)
        assert remaining() == 2.0


@pytest.mark.timeout(240)
def test_the_deadline_suite_passes_in_pure_python() -> None:
    """``RESILIENCE_NO_EXTENSIONS=1``: the deadline, rate and weighted tests (and these), in Python."""
    if SWITCHED_OFF or not BUILT:
        pytest.skip("this run is pure Python already")
    env = {**os.environ, "RESILIENCE_NO_EXTENSIONS": "1"}
    modules = [
        "tests/test_deadline.py",
        "tests/test_speedups.py",
        "tests/test_transport_deadline.py",
        "tests/rate/test_rate.py",
        "tests/rate/test_weighted.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-x", *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_no_compiler_means_pure_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build hook warns and keeps the wheel pure Python when the compile fails."""
    pytest.importorskip("hatchling", reason="the dev extra installs hatchling to build wheels")
    sys.path.insert(0, str(ROOT))
    try:
        from hatch_build import CustomBuildHook
    finally:
        sys.path.remove(str(ROOT))
    (tmp_path / "resilience").mkdir()
    (tmp_path / "resilience" / "_speedups.c").write_text("#error no compiler here\n")
    monkeypatch.delenv("RESILIENCE_NO_EXTENSIONS", raising=False)
    hook = CustomBuildHook(str(tmp_path), {}, None, None, str(tmp_path), "wheel")  # type: ignore[arg-type]
    build_data: dict[str, object] = {"force_include": {}}
    hook.initialize("standard", build_data)
    assert build_data == {"force_include": {}}  # pure_python untouched, nothing shipped


# -- the memory rate limiter's start with room (RateStart) ---------------------------------


class _Clock:
    """A clock read by hand (a float, or what *reading* gives), with a scheduling slack."""

    def __init__(self, slack: float, reading: object = None) -> None:
        self.now = 0.0
        self.slack = slack
        self.reading = reading

    def monotonic(self) -> object:
        return self.now if self.reading is None else self.reading


def _pair(rate: int, burst: int | None, clock: object) -> tuple[MemoryRateBackend, ...]:
    """A backend whose inline start runs in C (when built) and one in Python, on *clock*."""
    made = []
    for accelerated in (True, False):
        window = MemoryWindowBackend(clock)  # type: ignore[arg-type]
        backend = MemoryRateBackend(rate, 1.0, burst, window, clock)  # type: ignore[arg-type]
        if not accelerated:
            backend.start_now = None
        made.append(backend)
    return tuple(made)


def test_the_rate_start_is_used_when_built() -> None:
    """Built and not switched off: a memory rate limit without a burst starts in C."""
    accelerated, _ = _pair(5, None, _Clock(0.0))
    assert (accelerated.start_now is not None) is (BUILT and not SWITCHED_OFF)
    spaced, _ = _pair(5, 2, _Clock(0.0))
    assert spaced.start_now is None  # bursts: the general path decides every start


@given(
    rate=st.sampled_from([1, 2, 3, 130]),
    burst=st.sampled_from([None, 1]),
    slack=st.sampled_from([0.0, 0.0002]),
    ops=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.3, 1.0, 2.5]),  # time since the last one
            st.sampled_from([math.inf, 0.0, 0.5]),  # max wait
            st.sampled_from([None, None, None, 0.2, 0.0]),  # a window opened (0: closed early)
        ),
        max_size=300,
    ),
)
def test_the_rate_start_matches_the_pure_python_path(
    rate: int, burst: int | None, slack: float, ops: list[tuple[float, float, float | None]]
) -> None:
    """The same answers and the same logs, entry for entry, whichever path starts a call."""
    burst = None if burst is None or burst >= rate else burst
    clock = _Clock(slack)
    accelerated, pure = _pair(rate, burst, clock)
    for step, max_wait, opened in ops:
        clock.now += step
        for backend in (accelerated, pure):
            if opened:
                backend._window.extend(opened)
            elif opened is not None:
                backend._window.clear()
        assert pure.reserve(max_wait) == accelerated.reserve(max_wait)
        assert list(pure._state.log) == list(accelerated._state.log)
        assert list(pure._state.starts) == list(accelerated._state.starts)


def test_the_rate_start_reads_the_default_clock_in_force(clock: FakeClock) -> None:
    """No clock of its own: the start is stamped with virtual time, not the system's."""
    clock.advance(42.0)
    backend = MemoryRateBackend(3, 1.0, None, MemoryWindowBackend())
    assert 0.0 == backend.reserve(math.inf)
    assert [42.0] == list(backend._state.log) == list(backend._state.starts)


def test_the_rate_start_on_the_system_clock_reads_monotonic_time() -> None:
    """On the real clock the start's stamp lies between two readings of time.monotonic()."""
    with virtual_time(_clock.SYSTEM_CLOCK):
        backend = MemoryRateBackend(3, 1.0, None, MemoryWindowBackend())
        before = _clock.SYSTEM_CLOCK.monotonic()
        assert 0.0 == backend.reserve(math.inf)
        after = _clock.SYSTEM_CLOCK.monotonic()
    (stamp,) = backend._state.log
    assert before <= stamp <= after


@pytest.mark.parametrize("reading", [7, "soon"])
def test_a_reading_that_is_no_float_is_left_to_python(reading: object) -> None:
    """An int reading starts as Python would (the stamp kept as it came); junk fails the same."""
    clock = _Clock(0.0, reading)
    accelerated, pure = _pair(3, None, clock)
    if isinstance(reading, int):
        assert pure.reserve(math.inf) == accelerated.reserve(math.inf)
        assert [reading] == list(accelerated._state.log) == list(pure._state.log)
        return
    with pytest.raises(TypeError) as expected:
        pure.reserve(math.inf)
    with pytest.raises(TypeError) as raised:
        accelerated.reserve(math.inf)
    assert str(expected.value) == str(raised.value)


def test_a_clock_that_raises_leaves_the_lock_free() -> None:
    """A failing clock reading propagates, and the next call can take the lock again."""

    class Broken:
        def monotonic(self) -> float:
            raise OSError("no clock")

    accelerated, _ = _pair(3, None, Broken())
    with pytest.raises(OSError, match="no clock"):
        accelerated.reserve(math.inf)
    assert not accelerated._lock.locked()


# -- a weighted call's cost and start with room (RateWeightedStart) ------------------------


def _weighted_pair(
    rate: int, clock: object, estimate: Callable[..., object], fixed: int, *, stamp: bool
) -> tuple[tuple[MemoryRateBackend, Callable[..., object]], ...]:
    """Two backends on *clock*, each with a weighted start: in C (when built), in Python."""
    made = []
    for accelerated in (True, False):
        backend = _pair(rate, None, clock)[0 if accelerated else 1]
        start = weighted_start(backend, estimate, fixed, _check(rate), stamp=stamp)
        assert start is not None
        made.append((backend, start))
    return tuple(made)


def _same(answer: object) -> object:
    """An answer with NaN (no actual start yet) spelled so that it equals itself."""
    if isinstance(answer, tuple):
        return tuple("nan" if isinstance(a, float) and math.isnan(a) else a for a in answer)
    return answer


def _check(rate: int) -> Callable[[object], int]:
    def check(units: object) -> int:
        raise ValueError(f"cost {units!r} is not a whole number in [1, {rate}]")

    return check


def test_the_weighted_start_is_in_c_when_built() -> None:
    """Built and not switched off: the weighted start is the C type; else the Python twin."""
    (_, accelerated), (_, pure) = _weighted_pair(5, _Clock(0.0), int, 2, stamp=False)
    assert type(pure) is WeightedStart
    assert (type(accelerated).__module__ == "resilience._speedups") is (BUILT and not SWITCHED_OFF)
    backend = MemoryRateBackend(5, 1.0, 2, MemoryWindowBackend())
    assert weighted_start(backend, int, 2, _check(5), stamp=False) is None  # a burst: none


@given(
    rate=st.sampled_from([1, 2, 3, 7, 130, 300]),
    slack=st.sampled_from([0.0, 0.0002]),
    fixed=st.sampled_from([0, 0, 1, 2]),
    stamp=st.booleans(),
    ops=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.3, 1.0, 2.5]),  # time since the last one
            st.one_of(st.integers(min_value=1, max_value=8), st.just(130)),  # the call's cost
            st.sampled_from([None, None, None, 0.2, 0.0]),  # a window opened (0: closed early)
            st.sampled_from(["weighted", "weighted", "reserve", "units"]),  # who starts
        ),
        max_size=300,
    ),
)
def test_the_weighted_start_matches_the_pure_python_twin(
    rate: int,
    slack: float,
    fixed: int,
    stamp: bool,
    ops: list[tuple[float, int, float | None, str]],
) -> None:
    """The same answers, errors and logs, entry for entry, for any costs, steps and windows."""
    clock = _Clock(slack)
    costs: list[int] = []
    pair = _weighted_pair(rate, clock, lambda: costs[-1], fixed, stamp=stamp)
    for step, cost, opened, who in ops:
        clock.now += step
        costs.append(cost)
        answers: list[object] = []
        for backend, start in pair:
            if opened:
                backend._window.extend(opened)
            elif opened is not None:
                backend._window.clear()
            if who == "reserve":  # the general paths, in between, change the logs too
                answers.append(backend.reserve(0.5))
            elif who == "units":
                answers.append(backend.reserve_units(0.5, min(cost, rate)))
            else:
                try:
                    answers.append(start((), {}))
                except ValueError as error:
                    answers.append(("raised", str(error)))
        assert _same(answers[0]) == _same(answers[1])
        expected = fixed or cost
        if who == "weighted" and expected > rate:
            assert answers[0] == (
                "raised",
                f"cost {expected!r} is not a whole number in [1, {rate}]",
            )
        (accelerated, _), (pure, _) = pair
        assert list(pure._state.log) == list(accelerated._state.log)
        assert list(pure._state.starts) == list(accelerated._state.starts)


def test_a_weighted_start_appends_its_units_and_says_when_it_did() -> None:
    """Room for 3 of 5: three copies of now in both logs; then no room for 3 more: the cost."""
    clock = _Clock(0.0)
    for backend, start in _weighted_pair(5, clock, lambda n: n, 0, stamp=True):
        assert start((3,), None) == (0.0, 3)
        assert list(backend._state.log) == [0.0] * 3 == list(backend._state.starts)
        assert start((3,), None) == 3  # 3 + 3 > 5: the general path decides
        assert start((), {"n": 2}) == (0.0, 2)  # keywords go to the cost callable
        assert len(backend._state.log) == 5


class _Units(int):
    """An int subclass: no exact int, so the check decides about it."""


_DIGIT = 2**30  # CPython's int digit (the C start reads a one-digit int without a call)


@given(
    rate=st.sampled_from([1, 5, _DIGIT - 1, _DIGIT, _DIGIT + 1, 2**62, 2**63 - 1]),
    answer=st.one_of(
        st.integers(),
        st.sampled_from([0, 1, _DIGIT - 1, _DIGIT, _DIGIT + 1, 2**60, 2**63 - 1, 2**63, -1]),
        st.integers(min_value=-3, max_value=2**64).map(_Units),
        st.just(True),
    ),
)
def test_both_read_a_cost_answer_alike(rate: int, answer: object) -> None:
    """Any int answer (any size, sign or subclass): both answer its checked cost or raise."""
    clock = _Clock(0.0)
    answers: list[object] = []
    for backend, start in _weighted_pair(rate, clock, lambda: answer, 0, stamp=False):
        backend._window.extend(1.0)  # a window open: the checked cost comes back, unstarted
        try:
            answers.append(start((), None))
        except ValueError as error:
            answers.append(("raised", str(error)))
        assert not backend._state.log
    assert answers[0] == answers[1]
    fits = type(answer) is int and 1 <= answer <= rate
    assert answers[0] == (
        answer if fits else ("raised", f"cost {answer!r} is not a whole number in [1, {rate}]")
    )


@pytest.mark.parametrize("answer", [0, -1, 6, 2.0, True, None, "2", 10**30])
def test_a_bad_cost_raises_the_layers_error_from_both(answer: object) -> None:
    """Any answer that is no whole number in [1, rate] goes to the check, nothing is reserved."""
    clock = _Clock(0.0)
    for backend, start in _weighted_pair(5, clock, lambda: answer, 0, stamp=False):
        with pytest.raises(ValueError, match=r"is not a whole number in \[1, 5\]"):
            start((), None)
        assert not backend._state.log
        assert not backend._lock.locked()


def test_a_weighted_start_trims_when_the_log_crosses_128() -> None:
    """As the unweighted start: the entries that left the window go when 128 is crossed."""
    clock = _Clock(0.0)
    pair = _weighted_pair(1000, clock, lambda: 100, 0, stamp=False)
    for backend, start in pair:
        assert start((), None) is None  # 0 -> 100: crossed 0, trimmed (nothing to drop)
        clock.now = 5.0
        assert start((), None) is None  # 100 -> 200 crosses 128: the old 100 are dropped
        assert list(backend._state.log) == [5.0] * 100
        clock.now = 0.0


def test_a_weighted_start_whose_clock_raises_leaves_the_lock_free() -> None:
    """A failing clock reading propagates, and the next call can take the lock again."""

    class Broken:
        def monotonic(self) -> float:
            raise OSError("no clock")

    for backend, start in _weighted_pair(3, Broken(), lambda: 1, 0, stamp=False):
        with pytest.raises(OSError, match="no clock"):
            start((), None)
        assert not backend._lock.locked()
