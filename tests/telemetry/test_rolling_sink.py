"""RollingMetrics' call sink: C and its Python twin agree, and counting through it loses nothing."""

from __future__ import annotations

import threading

import pytest

from hypothesis import example, given
from hypothesis import strategies as st

from resilience import _deadline, traced
from resilience.telemetry import RollingMetrics
from resilience.telemetry._rolling import _BOUNDS_NS, CallSink, PyCallSink
from resilience.testing import FakeClock


_C_SINK = getattr(_deadline._speedups, "CallSink", None) if _deadline._speedups else None
_THREADS_DRAW = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
_WIDTH = 10**8  # 0.1 s slices

_NAMES = st.sampled_from(["a", "b", "c", "d"])
_CALL = st.tuples(
    _NAMES,
    st.one_of(
        st.integers(min_value=-(2**64), max_value=2**64),  # past int64 both ways: spilled
        st.integers(min_value=0, max_value=4 * 10**12),
        st.sampled_from([0, 1000, 1001, 1050, 1051, 999_999, 10**6, -1]),  # bin edges
    ),
    st.one_of(st.booleans(), st.sampled_from([0, 1, 2])),
    st.one_of(
        st.integers(min_value=0, max_value=5 * _WIDTH),  # within five slices
        st.just(-1),  # the call's policy had its own clock: spilled
        st.integers(min_value=2**63, max_value=2**65),  # out of int64: spilled
    ),
)
# A step: a call, a take, or something that is no call tuple at all.
_STEP = st.one_of(
    _CALL,
    st.just("take"),
    st.sampled_from([("a", 1, False), (b"a", 1, False, 5), ("a", 1.5, False, 5), 7]),
)


def _run(sink_type, steps, most):
    spilled: list[object] = []
    sink = sink_type(_BOUNDS_NS, _WIDTH, spilled.append, most)
    taken = []
    waiting = []
    for step in steps:
        if step == "take":
            taken.append(sink.take())
        else:
            sink(step)
        waiting.append(sink.waiting)
    taken.append(sink.take())
    return taken, spilled, waiting


def test_the_c_sink_is_used_when_built():
    """Built and not switched off, RollingMetrics counts through the C sink."""
    if _C_SINK is None:
        pytest.skip("no C accelerator here: the Python twin counts")
    assert CallSink is _C_SINK
    assert type(RollingMetrics()._sink) is _C_SINK


@pytest.mark.skipif(_C_SINK is None, reason="no C accelerator here: nothing to compare")
@_THREADS_DRAW
@given(st.lists(_STEP, max_size=120), st.integers(min_value=1, max_value=5))
@example([("a", 5, True, 3 * _WIDTH), ("a", 5, False, _WIDTH), "take", ("a", 1, 1, 0)], 1)
def test_c_and_python_sinks_agree(steps, most):
    """The same steps give the same records, the same spills and the same waiting counts."""
    assert _run(_C_SINK, steps, most) == _run(PyCallSink, steps, most)


@_THREADS_DRAW
@given(st.lists(_CALL, min_size=1, max_size=150))
def test_sink_then_drain_equals_counting_one_by_one(calls):
    """Calls in the order they ended: the sink's records merge to what ``count`` builds."""
    start = 10**15  # far from 0: slice indexes as large as a real clock's
    ordered = sorted(
        (call for call in calls if 0 <= call[3] < 2**62 and -(2**63) <= call[1] < 2**63),
        key=lambda call: call[3],
    )
    batch = [(name, took, bool(failed), start + at) for name, took, failed, at in ordered]
    sunk, one_by_one = RollingMetrics(1.0), RollingMetrics(1.0)
    for call in batch:
        sunk._tap(call)  # the sink where it is built, else the queue
    sunk._drain()
    for name, took, failed, ended in batch:
        one_by_one.count(name, took, failed, ended)
    state = {n: (s.head, s.counts, s.hists) for n, s in sunk._series.items()}
    expected = {n: (s.head, s.counts, s.hists) for n, s in one_by_one._series.items()}
    assert expected == state
    assert not sunk._pending


def test_without_the_accelerator_the_metrics_keep_their_queue():
    """No C sink (or a clock of their own): each call is queued, still counted once."""
    metrics = RollingMetrics()
    if CallSink is None:
        assert metrics._sink is None
        assert metrics._tap == metrics._pending.append
    assert RollingMetrics(clock=FakeClock())._sink is None


_SINKS = [sink for sink in (CallSink, PyCallSink) if sink is not None]


def test_bad_arguments_are_refused():
    for sink_type in _SINKS:
        with pytest.raises(ValueError, match="width and most"):
            sink_type(_BOUNDS_NS, 0, print, 1)
        with pytest.raises(ValueError, match="width and most"):
            sink_type(_BOUNDS_NS, 1, print, 0)


def test_names_past_the_cap_are_counted_through_the_queue():
    """More names than max_names: the sink spills them; every name is still counted once."""

    metrics = RollingMetrics(max_names=3).attach()
    try:
        for n in range(6):
            traced(name=f"n{n}", log=False)(lambda: 1)()
        found = {m.name: m.calls for m in metrics.snapshot()}
    finally:
        metrics.detach()
    assert 3 == len(found)  # the cap holds: the least recently seen are evicted
    assert set(found.values()) == {1}


def test_a_spill_that_raises_is_the_tap_that_raises():
    """The sink gives the spill's error to @traced, which drops the tap (and logs it)."""

    def spill(call):
        raise RuntimeError("spill bug")

    for sink_type in _SINKS:
        sink = sink_type(_BOUNDS_NS, _WIDTH, spill, 1)
        with pytest.raises(RuntimeError, match="spill bug"):
            sink(("a", 1, False, -1))


def test_threads_lose_no_call():
    """Eight real threads calling traced functions while a drainer merges: every call counted."""

    @traced(name="left", log=False)
    def left():
        return 1

    @traced(name="right", log=False)
    def right():
        raise KeyError

    def work():
        for _ in range(2000):
            left()
            try:
                right()
            except KeyError:
                pass

    with RollingMetrics(60.0, buckets=60) as metrics:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            metrics._drain()  # drains racing the taps, besides the drainer thread's own
        for thread in threads:
            thread.join()
        found = {m.name: (m.calls, m.failures) for m in metrics.snapshot()}
    assert {"left": (16000, 0), "right": (16000, 16000)} == found
