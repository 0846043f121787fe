"""The optional C accelerator of ``deadline``: the same rules as the pure-Python core."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

from datetime import timedelta
from pathlib import Path

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import _deadline, deadline, remaining
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
    """``RESILIENCE_NO_EXTENSIONS=1``: the deadline tests (and these), on the pure core."""
    if SWITCHED_OFF or not BUILT:
        pytest.skip("this run is pure Python already")
    env = {**os.environ, "RESILIENCE_NO_EXTENSIONS": "1"}
    modules = [
        "tests/test_deadline.py",
        "tests/test_speedups.py",
        "tests/test_transport_deadline.py",
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
