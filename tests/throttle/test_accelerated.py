"""The throttle's C twins (``ThrottleTally``, ``ThrottleRunner``) follow the Python ones exactly."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import ThrottledError, ThrottlePolicy, circuit_breaker, set_active, throttled
from resilience._decorating import apply
from resilience._throttle import layer as throttle_layer
from resilience._throttle.layer import ThrottleLayer
from resilience._throttle.state import Tally, ThrottleState
from resilience.stores._memory import DEFAULT_STORE
from resilience.testing import FakeClock, reset, virtual_time


SPEEDUPS = throttle_layer._speedups
ROOT = Path(__file__).parent.parent.parent
needs_c = pytest.mark.skipif(SPEEDUPS is None, reason="pure Python: no C twin to compare")


class PurePythonLayer(ThrottleLayer):
    """The throttle with its Python runner alone, beside the C one in the same process."""

    __slots__ = ()
    accelerated = False


def pure_throttled(func: Callable[..., Any], **fields: Any) -> Any:
    """``@throttled(**fields)``, on the Python runner."""
    return apply(PurePythonLayer(ThrottlePolicy(**fields)), func)


def c_throttled(func: Callable[..., Any], **fields: Any) -> Any:
    """``@throttled(**fields)`` as users get it (the C runner when built)."""
    return throttled(**fields)(func)


def counts(key: str) -> tuple[float, int, int]:
    backend = DEFAULT_STORE.peek("throttle", key)
    assert backend is not None
    result: tuple[float, int, int] = backend.probability()
    return result


@needs_c
def test_the_c_runner_is_used_when_built() -> None:
    """Built and not switched off: a sync ``@throttled`` runs its closed path in C."""
    decorated = throttled(key="c-used")(lambda: 1)
    assert isinstance(decorated._self_wrapper, SPEEDUPS.ThrottleRunner)
    assert type(ThrottleState(2.0, 1.0).tally) is SPEEDUPS.ThrottleTally
    assert not isinstance(
        pure_throttled(lambda: 1, key="py")._self_wrapper, SPEEDUPS.ThrottleRunner
    )


tally_steps = st.lists(
    st.one_of(
        st.just(("accept", 0.0)),
        st.just(("peek", 0.0)),
        st.just(("take", 0.0)),
        st.tuples(st.just("until"), st.floats(allow_nan=False)),
        st.tuples(st.just("calm"), st.sampled_from([0.0, 1.0, 2.0])),
    ),
    max_size=80,
)


@needs_c
@given(tally_steps)
def test_the_tallies_agree(steps: list[tuple[str, float]]) -> None:
    """Accepts, peeks, takes and field writes in any order: the same answers from both."""
    python, c = Tally(), SPEEDUPS.ThrottleTally()
    for what, value in steps:
        answers = []
        for tally in (python, c):
            if what == "until":
                tally.until = value
            elif what == "calm":
                tally.calm = int(value)
            elif what == "accept":
                tally.accept()  # (what it returns is nobody's business)
            else:
                answers.append(getattr(tally, what)())
            answers.append((tally.until, tally.calm))
        assert answers[: len(answers) // 2] == answers[len(answers) // 2 :]
    assert python.peek() == c.peek()


class Boom(Exception):
    """A failure the throttles count."""


def target(box: list[str]) -> Callable[..., str]:
    def call(*args: object, **kwargs: object) -> str:
        what = box[0]
        if what == "fail":
            raise Boom
        if what == "other":
            raise KeyError(what)  # not matching on=Boom: an accept
        if what == "cancel":
            raise KeyboardInterrupt  # control flow: not counted
        return what

    return call


def outcome_of(call: Callable[..., str], *args: object, **kwargs: object) -> str:
    try:
        return call(*args, **kwargs)
    except ThrottledError as error:
        return f"rejected {error.probability:.12f}"
    except Boom:
        return "fail"
    except KeyError:
        return "other"
    except KeyboardInterrupt:
        return "cancel"


history = st.lists(
    st.one_of(
        st.sampled_from(["ok", "fail", "other", "cancel"]),
        st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=25.0)),
        st.sampled_from(["off", "on", "reset", "kwargs"]),
    ),
    max_size=70,
)


@needs_c
@settings(max_examples=80)
@given(
    history,
    st.lists(st.floats(min_value=0.0, max_value=0.999), max_size=70),
    st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]),
)
def test_the_runners_agree_on_any_history(
    steps: list[object], draws: list[float], k: float
) -> None:
    """Outcomes, clock steps, switches and resets: the same results, refusals and counts."""
    with virtual_time() as clock:
        box = ["ok"]
        rands = [list(draws), list(draws)]
        fields: dict[str, Any] = {"k": k, "window": 20.0, "on": Boom}
        c = throttled(key="agree-c", rand=lambda: rands[0].pop(0) if rands[0] else 0.5, **fields)(
            target(box)
        )
        python = pure_throttled(
            target(box), key="agree-py", rand=lambda: rands[1].pop(0) if rands[1] else 0.5, **fields
        )
        try:
            for step in steps:
                if isinstance(step, tuple):
                    clock.advance(step[1])
                    continue
                if step in ("off", "on"):
                    set_active(step == "on")
                    continue
                if step == "reset":
                    reset()
                    continue
                box[:] = [step if step != "kwargs" else "ok"]
                keywords = {"n": 1} if step == "kwargs" else {}
                assert outcome_of(python, 1, **keywords) == outcome_of(c, 1, **keywords)
                seen = [DEFAULT_STORE.peek("throttle", key) for key in ("agree-c", "agree-py")]
                if None not in seen:
                    assert counts("agree-py") == counts("agree-c")
                    tallies = [backend._state.tally for backend in seen]  # type: ignore[union-attr]
                    assert tallies[0].calm == tallies[1].calm
        finally:
            set_active(True)


@pytest.mark.parametrize("make", [c_throttled, pure_throttled], ids=["default", "python"])
def test_an_error_while_counting_keeps_the_call_s_error_as_its_context(make: Any) -> None:
    """An ``on`` predicate that raises: its error propagates, the call's error its context."""

    def failing(exc: BaseException) -> bool:
        raise ZeroDivisionError

    decorated = make(target(["fail"]), key="ctx", on=failing)
    with pytest.raises(ZeroDivisionError) as info:
        decorated()
    assert isinstance(info.value.__context__, Boom)


@pytest.mark.parametrize("make", [c_throttled, pure_throttled], ids=["default", "python"])
def test_stacked_methods_and_keywords(make: Any, clock: FakeClock) -> None:
    """Under and over another decorator, on a method, with keywords: the same calls and counts."""

    class Client:
        def __init__(self) -> None:
            self.seen: list[object] = []

        def get(self, path: str, *, retries: int = 0) -> str:
            self.seen.append((path, retries))
            return path

    inner = make(circuit_breaker(name="stacked-under")(Client.get), key="under")
    Client.under = inner  # type: ignore[attr-defined]
    Client.over = circuit_breaker(name="stacked-over")(make(Client.get, key="over"))  # type: ignore[attr-defined]
    client = Client()
    assert "/a" == client.under("/a", retries=2)  # type: ignore[attr-defined]
    assert "/b" == client.over("/b")  # type: ignore[attr-defined]
    clock.advance(100.0)
    assert "/c" == client.under(path="/c")  # type: ignore[attr-defined]
    assert [("/a", 2), ("/b", 0), ("/c", 0)] == client.seen
    assert (0.0, 2, 2) == counts("under")
    assert (0.0, 1, 1) == counts("over")


@pytest.mark.parametrize("make", [c_throttled, pure_throttled], ids=["default", "python"])
def test_few_misses_weigh_again_once_the_accepts_expire(make: Any, clock: FakeClock) -> None:
    """Two accepts, then one miss (calm while the bucket lasts); the accepts expire: p = 1/2."""
    box = ["ok"]
    call = make(target(box), key="expiring", window=10.0, on=Boom, rand=lambda: 0.0)
    assert ["ok", "ok"] == [outcome_of(call), outcome_of(call)]
    clock.advance(1.5)
    box[:] = ["fail"]
    assert "fail" == outcome_of(call)
    box[:] = ["cancel"]
    assert "cancel" == outcome_of(call)  # 1 miss against 2 accepts: calm, no draw (no count)
    clock.advance(9.0)  # t = 10.5: the first bucket's accepts are gone, the miss is not
    assert "rejected 0.500000000000" == outcome_of(call)  # (1 - 2 * 0) / (1 + 1)


@pytest.mark.parametrize("make", [c_throttled, pure_throttled], ids=["default", "python"])
def test_threads_lose_no_count(make: Any, clock: FakeClock) -> None:
    """Four threads at once, buckets rolling under them: every request and accept counted."""
    calls, fail_every = 1500, 10

    def work(n: int) -> int:
        if n % fail_every == 0:
            raise Boom
        return n

    call = make(work, key="threads", rand=lambda: 0.999)

    def worker() -> None:
        for n in range(1, calls + 1):
            with contextlib.suppress(Boom):
                call(n)
            if n % (calls // 4) == 0:
                clock.advance(5.0)  # buckets roll while the others count

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _, requests, accepts = counts("threads")
    assert (4 * calls, 4 * (calls - calls // fail_every)) == (requests, accepts)


def test_below_k_1_the_current_bucket_s_accepts_weigh_at_once() -> None:
    """k=0.5: ten accepts in the first bucket give the next call (10 - 5) / 11, not 0."""
    state = ThrottleState(0.5, 120.0)
    for _ in range(10):
        state.record(1.0, accepted=True)
    assert 0 == state.tally.calm
    assert 5 / 11 == state.probability(1.0)
    decorated = throttled(key="loud", k=0.5, rand=lambda: 0.0)(lambda: 1)
    assert 1 == decorated()
    with pytest.raises(ThrottledError):
        decorated()


@pytest.mark.timeout(240)
def test_the_throttle_suite_passes_in_pure_python() -> None:
    """``RESILIENCE_NO_EXTENSIONS=1``: the throttle tests on the Python tally and runner."""
    if SPEEDUPS is None:
        pytest.skip("this run is pure Python already")
    env = {**os.environ, "RESILIENCE_NO_EXTENSIONS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-x", "tests/throttle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
