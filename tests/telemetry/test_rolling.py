"""Rolling per-name metrics from the bus: counts over a sliding window, bounded percentiles."""

from __future__ import annotations

import math
import threading

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, CircuitOpenError, circuit_breaker, retry, traced
from resilience.telemetry import NameMetrics, RollingMetrics
from resilience.telemetry._bus import Event
from resilience.telemetry._rolling import _percentiles, percentile_bin


class Boom(Exception):
    """The failure of our fake upstream."""


def _by_name(metrics):
    return {m.name: m for m in metrics.snapshot()}


class TestCounting:
    def test_calls_failures_retries_give_ups_rejections(self, clock):
        """A traced, retried, guarded function: every counter from real decorated calls."""
        calls = {"n": 0}

        @traced(name="fetch")
        @circuit_breaker(name="fetch", failure_threshold=2, reset_timeout=30, on=Boom)
        @retry(attempts=2, on=Boom, backoff=Backoff(base=0.0, max=0.0), name="fetch")
        def fetch(fail):
            calls["n"] += 1
            clock.advance(0.01)
            if fail:
                raise Boom
            return "ok"

        with RollingMetrics(window=10.0, clock=clock) as metrics:
            assert "ok" == fetch(False)
            for _ in range(2):
                with pytest.raises(Boom):
                    fetch(True)
            with pytest.raises(CircuitOpenError):
                fetch(False)
        found = _by_name(metrics)["fetch"]
        # 1 success, 2 failures, 1 refusal (a failure for @traced, outside the breaker)
        assert (4, 3, 2, 2, 1) == (
            found.calls,
            found.failures,
            found.retries,
            found.give_ups,
            found.rejections,
        )
        assert pytest.approx(0.75) == found.error_rate
        assert 5 == calls["n"]  # 1 + 2 * 2 attempts; the rejected call never ran

    def test_untraced_names_count_their_attempts(self, clock):
        """Without @traced, @retry's attempts are the calls, with their durations."""

        @retry(attempts=3, on=Boom, backoff=Backoff(base=0.0, max=0.0), name="plain")
        def plain():
            clock.advance(0.2)
            raise Boom

        with RollingMetrics(clock=clock) as metrics, pytest.raises(Boom):
            plain()
        found = _by_name(metrics)["plain"]
        assert (3, 3, 2, 1) == (found.calls, found.failures, found.retries, found.give_ups)
        assert found.p50 == pytest.approx(0.2, rel=0.03)

    def test_the_window_slides_bucket_by_bucket(self, clock):
        """Counts older than the window leave it, a tenth at a time."""
        metrics = RollingMetrics(window=10.0, clock=clock)
        stop = Event("resilience.trace.stop", {"duration": 0.1}, {"name": "n"})
        for _ in range(3):
            metrics.handle(stop)
        clock.advance(5.0)
        metrics.handle(stop)
        assert 4 == _by_name(metrics)["n"].calls
        clock.advance(5.0)  # the first three are 10 s old: out
        assert 1 == _by_name(metrics)["n"].calls
        clock.advance(5.0)
        found = _by_name(metrics)["n"]
        assert (0, None) == (found.calls, found.p50)

    def test_snapshot_changes_nothing(self, clock):
        """Reading twice gives the same numbers: reads do not roll the ring."""
        metrics = RollingMetrics(clock=clock)
        metrics.handle(Event("resilience.trace.exception", {"duration": 0.3}, {"name": "n"}))
        clock.advance(3.0)
        assert metrics.snapshot() == metrics.snapshot()

    def test_names_are_bounded(self, clock):
        """Past max_names the least recently seen name is evicted."""
        metrics = RollingMetrics(max_names=3, clock=clock)
        for name in ["a", "b", "c", "a", "d"]:
            metrics.handle(Event("resilience.trace.stop", {"duration": 0.1}, {"name": name}))
        assert ["a", "c", "d"] == [m.name for m in metrics.snapshot()]

    def test_threads_count_every_event(self, clock):
        """Eight threads emitting at once: no event lost."""
        metrics = RollingMetrics(clock=clock)
        stop = Event("resilience.trace.stop", {"duration": 0.001}, {"name": "n"})

        def work():
            for _ in range(500):
                metrics.handle(stop)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 4000 == _by_name(metrics)["n"].calls

    def test_bad_arguments(self):
        """Each argument names itself and its range."""
        with pytest.raises(ValueError, match="window"):
            RollingMetrics(window=0)
        with pytest.raises(ValueError, match="buckets"):
            RollingMetrics(buckets=0)
        with pytest.raises(TypeError, match="max_names"):
            RollingMetrics(max_names=1.5)

    def test_to_dict_and_detach(self, clock):
        """to_dict adds the error rate; detach stops counting."""
        metrics = RollingMetrics(clock=clock).attach()
        metrics.detach()

        @traced(name="quiet")
        def quiet():
            return 1

        quiet()
        assert [] == metrics.snapshot()
        found = NameMetrics("n", 10.0, 2, 1, 0, 0, 0, 0.1, 0.2, 0.3)
        assert 0.5 == found.to_dict()["error_rate"]


# Other tests' leftover threads (a reporter retrying with jitter) may draw from the global
# random module while hypothesis generates; it then warns as if the strategy had done it.
_THREADS_DRAW = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


@_THREADS_DRAW
@given(st.lists(st.floats(min_value=1e-5, max_value=100.0), min_size=1, max_size=300))
def test_percentiles_within_bin_width(durations):
    """Each percentile is within 2.5% of the exact nearest-rank one."""
    hist: dict[int, int] = {}
    for d in durations:
        hist[percentile_bin(d)] = hist.get(percentile_bin(d), 0) + 1
    ordered = sorted(durations)
    for rank, found in zip((0.5, 0.9, 0.99), _percentiles(hist, (0.5, 0.9, 0.99)), strict=True):
        exact = ordered[max(1, math.ceil(rank * len(ordered))) - 1]
        assert found == pytest.approx(exact, rel=0.026)


@_THREADS_DRAW
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_every_duration_has_a_bounded_bin(seconds):
    """Any float, even NaN or infinite, lands in one of a few hundred bins."""
    assert 0 <= percentile_bin(seconds) <= 500


class TestCallTap:
    """Traced calls reach the metrics through @traced's call tap, not through built events."""

    def test_counted_on_the_quiet_path_with_durations(self, clock):
        """With no trace-event handler, @traced stays quiet and still gives each call."""
        from resilience.telemetry._bus import BUS

        @traced(name="quiet", log=False)
        def call(fail=False):
            clock.advance(0.05)
            if fail:
                raise Boom
            return "ok"

        with RollingMetrics(clock=clock) as metrics:
            assert not BUS.traced  # the metrics want no trace events: no event is built
            assert "ok" == call()
            with pytest.raises(Boom):
                call(fail=True)
        found = _by_name(metrics)["quiet"]
        assert (2, 1) == (found.calls, found.failures)
        assert found.p50 == pytest.approx(0.05, rel=0.03)

    def test_counted_once_beside_a_trace_event_handler(self, clock):
        """A handler of trace events makes @traced build them; the tap still counts once."""
        from resilience.telemetry import attach

        seen = []
        handle = attach(seen.append, "resilience.trace.stop")

        @traced(name="heard", log=False)
        def call():
            clock.advance(0.01)
            return "ok"

        try:
            with RollingMetrics(clock=clock) as metrics:
                call()
        finally:
            handle.detach()
        assert 1 == len(seen)
        assert 1 == _by_name(metrics)["heard"].calls

    def test_a_broken_tap_is_dropped_and_the_call_goes_on(self):
        """A tap that raises is removed; the caller gets its result."""
        from resilience.telemetry._bus import TAPS, add_tap

        def broken(call):
            raise RuntimeError("tap bug")

        add_tap(broken)
        try:
            assert "ok" == traced(name="t", log=False)(lambda: "ok")()
            assert broken not in TAPS
        finally:
            if broken in TAPS:
                TAPS.remove(broken)


def _state(metrics):
    return {
        name: (series.head, series.counts, series.hists) for name, series in metrics._series.items()
    }


_CALL = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e", "f"]),
    st.one_of(
        st.integers(min_value=0, max_value=4 * 10**12),  # up to 4000 s: past the top bin
        st.sampled_from([0, 1000, 1001, 1050, 1051, 999_999, 10**6]),  # bin edges
    ),
    st.booleans(),
    st.integers(min_value=0, max_value=5 * 10**8),  # ends within five slices of 0.1 s
)


class TestBatchCounting:
    """The drainer's bulk count equals counting the same calls one by one."""

    @_THREADS_DRAW
    @given(st.lists(_CALL, min_size=1, max_size=200))
    def test_bulk_equals_one_by_one(self, calls):
        """Calls in the order they ended: the same slices, counts and histograms."""
        start = 10**15  # far from 0: slice indexes as large as a real clock's
        ordered = sorted(calls, key=lambda call: call[3])
        batch = [(name, took, failed, start + at) for name, took, failed, at in ordered]
        bulk, one_by_one = RollingMetrics(1.0), RollingMetrics(1.0)
        bulk._count_batch(list(batch))
        for name, took, failed, ended in batch:
            one_by_one.count(name, took, failed, ended)
        assert _state(one_by_one) == _state(bulk)

    @_THREADS_DRAW
    @given(st.lists(_CALL, min_size=1, max_size=200), st.randoms(use_true_random=False))
    def test_order_within_a_slice_does_not_matter(self, calls, rng):
        """Calls of one slice, in any order (threads end calls out of order): same counts."""
        start = 10**15
        batch = [(name, took, failed, start + at % 10**8) for name, took, failed, at in calls]
        shuffled = list(batch)
        rng.shuffle(shuffled)
        bulk, one_by_one = RollingMetrics(1.0), RollingMetrics(1.0)
        bulk._count_batch(shuffled)
        for name, took, failed, ended in batch:
            one_by_one.count(name, took, failed, ended)
        assert {n: s[1:] for n, s in _state(one_by_one).items()} == {
            n: s[1:] for n, s in _state(bulk).items()
        }
