"""
Rolling per-name metrics from the event bus, as Hystrix's rolling counters.

``RollingMetrics`` subscribes to the events that describe a call's fate and keeps, per
decorated name, the calls, failures, retries, give-ups and rejections of the last *window*
seconds, plus the latency percentiles (p50, p90, p99) of those calls. Time is cut into
*buckets* slices of ``window / buckets`` seconds (Hystrix's ten one-second buckets by
default); a slice older than the window is dropped whole, so counts slide in steps of one
slice. Latencies go into a log-scaled histogram per slice (about 5% wide bins from 1 us to
an hour, at most a few hundred bins), so percentiles are within 2.5% of the exact ones and
memory is fixed per name; names are capped by *max_names*, the least recently seen one
evicted first. So memory never grows with traffic.

Which events count: a call is a ``resilience.trace.stop`` (success) or
``resilience.trace.exception`` (failure, including a call a guard inside refused) with
its duration. A name that is not ``@traced`` shows its ``@retry`` attempts
(``resilience.retry.attempt.stop``) as calls instead. ``resilience.retry.retry`` is a retry, ``resilience.retry.give_up`` a give-up,
and any ``*.rejected`` event or ``resilience.bounded.timeout`` a rejection.
"""

from __future__ import annotations

import math
import threading

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from resilience import _clock
from resilience._validate import check_int, duration
from resilience.telemetry._bus import attach


if TYPE_CHECKING:
    from datetime import timedelta
    from types import TracebackType

    from resilience.telemetry._bus import Event, Handle
    from resilience.typing import Clock


__all__ = ["EVENTS", "NameMetrics", "RollingMetrics", "percentile_bin"]

CALLS, FAILURES, RETRIES, GIVE_UPS, REJECTIONS, ATTEMPTS, ATTEMPT_FAILURES = range(7)
_COUNTERS: Final = 7

_GROWTH: Final = 1.05
_LOG_GROWTH: Final = math.log(_GROWTH)
_FLOOR: Final = 1e-6  # durations at or below a microsecond share bin 0
_CEILING: Final = 3600.0  # an hour and above: one bin
_TOP: Final = math.ceil(math.log(_CEILING / _FLOOR) / _LOG_GROWTH)

#: The event names (prefixes) the metrics subscribe to.
EVENTS: Final = (
    "resilience.trace.stop",
    "resilience.trace.exception",
    "resilience.retry.attempt.stop",
    "resilience.retry.retry",
    "resilience.retry.give_up",
    "resilience.breaker.rejected",
    "resilience.rate.rejected",
    "resilience.throttle.rejected",
    "resilience.bounded.timeout",
)


def percentile_bin(seconds: float) -> int:
    """Return the histogram bin of a duration: bin *i* holds (1.05**(i-1), 1.05**i] us."""
    if not seconds > _FLOOR:  # also NaN
        return 0
    if seconds >= _CEILING:  # also inf, and values whose ratio to the floor overflows
        return _TOP
    return min(_TOP, math.ceil(math.log(seconds / _FLOOR) / _LOG_GROWTH))


def _bin_value(index: int) -> float:
    """The value reported for bin *index*: the geometric middle of its bounds."""
    if index == 0:
        return _FLOOR
    value: float = _FLOOR * _GROWTH ** (index - 0.5)
    return value


@dataclass(frozen=True, slots=True)
class NameMetrics:
    """
    One decorated name's rolling counts and latency over the last *window* seconds.

    Attributes:
        name: The decorated name (``@traced``'s, ``@retry``'s...).
        window: The rolling window in seconds.
        calls: Calls that ended in the window.
        failures: Of those, calls that raised.
        retries: Retries started in the window.
        give_ups: Calls whose retries gave up in the window.
        rejections: Calls refused by a breaker, a limiter, a throttle or a pool timeout.
        p50: Median latency in seconds (None without calls).
        p90: 90th percentile latency in seconds.
        p99: 99th percentile latency in seconds.

    .. versionadded:: 0.1.0
    """

    name: str
    window: float
    calls: int
    failures: int
    retries: int
    give_ups: int
    rejections: int
    p50: float | None
    p90: float | None
    p99: float | None

    @property
    def error_rate(self) -> float | None:
        """``failures / calls`` (None without calls)."""
        return self.failures / self.calls if self.calls else None

    def to_dict(self) -> dict[str, Any]:
        """Return plain data for JSON, with ``error_rate``."""
        return {**asdict(self), "error_rate": self.error_rate}


class _Series:
    """
    One name's ring of slices: the counters and two latency histograms per slice.

    Traced calls and retry attempts are kept apart (one call may hold several attempts);
    the view shows the calls when the name is traced, else the attempts.
    """

    __slots__ = ("attempt_hists", "counts", "head", "hists", "traced")

    def __init__(self, buckets: int) -> None:
        self.counts = [[0] * _COUNTERS for _ in range(buckets)]
        self.hists: list[dict[int, int]] = [{} for _ in range(buckets)]
        self.attempt_hists: list[dict[int, int]] = [{} for _ in range(buckets)]
        self.head: int | None = None
        self.traced = False

    def slot(self, index: int) -> int:
        """Move the ring to slice *index* (clearing the slices it passes); return its slot."""
        buckets = len(self.counts)
        head = self.head
        if head is None or index - head >= buckets:
            for slot in range(buckets):
                self._clear(slot)
        elif index > head:
            for step in range(head + 1, index + 1):
                self._clear(step % buckets)
        else:  # a late event: it counts in the newest slice
            return head % buckets
        self.head = index
        return index % buckets

    def _clear(self, slot: int) -> None:
        self.counts[slot] = [0] * _COUNTERS
        self.hists[slot] = {}
        self.attempt_hists[slot] = {}

    def live(self, index: int) -> list[int]:
        """The slots still inside the window at slice *index* (read-only)."""
        buckets = len(self.counts)
        head = self.head
        if head is None or index - head >= buckets:
            return []
        return [step % buckets for step in range(index - buckets + 1, head + 1)]


class RollingMetrics:
    """
    Per-name calls, failures, retries, give-ups, rejections and latency percentiles.

    Use ``with RollingMetrics() as metrics:`` or ``metrics = RollingMetrics().attach()``
    (and ``metrics.detach()``), then ``metrics.snapshot()``; give it to
    ``resilience.snapshot(metrics=...)`` or ``resilience.dashboard.serve(metrics=...)``.

    Args:
        window: The rolling window in seconds (> 0).
        buckets: Slices of the window (1 to 60): the counts slide in steps of
            ``window / buckets``.
        max_names: Names kept at most (>= 1); the least recently seen is evicted first.
        clock: Where time is read (default: the process's clock, so virtual time works).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        window: float | timedelta = 10.0,
        *,
        buckets: int = 10,
        max_names: int = 500,
        clock: Clock | None = None,
    ) -> None:
        seconds = duration("RollingMetrics", "window", window, strict=True)
        assert seconds is not None
        self.window: float = seconds
        self.buckets: int = check_int("RollingMetrics", "buckets", buckets, low=1, high=60) or 1
        self.max_names: int = check_int("RollingMetrics", "max_names", max_names, low=1) or 1
        self._width = seconds / self.buckets
        self._clock = clock
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._lock = threading.Lock()
        self._handle: Handle | None = None

    # -- subscription -------------------------------------------------------------------

    def attach(self) -> RollingMetrics:
        """Start counting events from the bus (again after ``detach``); return self."""
        if self._handle is None or not self._handle.attached:
            self._handle = attach(self.handle, EVENTS)
        return self

    def detach(self) -> None:
        """Stop counting (the counts stay readable)."""
        if self._handle is not None:
            self._handle.detach()
            self._handle = None

    def __enter__(self) -> RollingMetrics:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    # -- counting -----------------------------------------------------------------------

    def _index(self) -> int:
        clock = _clock.resolve(self._clock)
        return math.floor(clock.monotonic() / self._width)

    def _get(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _Series(self.buckets)
            if len(self._series) > self.max_names:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(name)
        return series

    def handle(self, event: Event) -> None:
        """Count one event (the bus calls this; tests may too)."""
        metadata = event.metadata
        name = metadata.get("name") or metadata.get("key")
        if not isinstance(name, str):
            return
        kind = event.name
        index = self._index()
        with self._lock:
            series = self._get(name)
            if kind in ("resilience.trace.stop", "resilience.trace.exception"):
                series.traced = True
                self._call(series, index, event, kind == "resilience.trace.exception", False)
            elif kind == "resilience.retry.attempt.stop":
                self._call(series, index, event, metadata.get("outcome") == "raised", True)
            elif kind == "resilience.retry.retry":
                series.counts[series.slot(index)][RETRIES] += 1
            elif kind == "resilience.retry.give_up":
                series.counts[series.slot(index)][GIVE_UPS] += 1
            elif kind.endswith(".rejected") or kind == "resilience.bounded.timeout":
                series.counts[series.slot(index)][REJECTIONS] += 1

    @staticmethod
    def _call(series: _Series, index: int, event: Event, failed: bool, attempt: bool) -> None:
        slot = series.slot(index)
        counts = series.counts[slot]
        counts[ATTEMPTS if attempt else CALLS] += 1
        counts[ATTEMPT_FAILURES if attempt else FAILURES] += failed
        seconds = event.measurements.get("duration")
        if seconds is not None:
            hist = (series.attempt_hists if attempt else series.hists)[slot]
            at = percentile_bin(seconds)
            hist[at] = hist.get(at, 0) + 1

    # -- reading ------------------------------------------------------------------------

    def snapshot(self) -> list[NameMetrics]:
        """Return every name's counts over the window as of now, by name (changes nothing)."""
        index = self._index()
        out = []
        with self._lock:
            for name, series in self._series.items():
                slots = series.live(index)
                totals = [0] * _COUNTERS
                merged: dict[int, int] = {}
                hists = series.hists if series.traced else series.attempt_hists
                for slot in slots:
                    for i, value in enumerate(series.counts[slot]):
                        totals[i] += value
                    for at, count in hists[slot].items():
                        merged[at] = merged.get(at, 0) + count
                p50, p90, p99 = _percentiles(merged, (0.5, 0.9, 0.99))
                calls, failures, retries, give_ups, rejections, attempts, failed = totals
                if not series.traced:
                    calls, failures = attempts, failed
                out.append(
                    NameMetrics(
                        name,
                        self.window,
                        calls,
                        failures,
                        retries,
                        give_ups,
                        rejections,
                        p50,
                        p90,
                        p99,
                    )
                )
        return sorted(out, key=lambda m: m.name)

    def clear(self) -> None:
        """Forget every name."""
        with self._lock:
            self._series.clear()

    def __repr__(self) -> str:
        state = "attached" if self._handle is not None and self._handle.attached else "detached"
        return f"<RollingMetrics window={self.window:g}s {len(self._series)} names {state}>"


def _percentiles(hist: dict[int, int], ranks: tuple[float, ...]) -> list[float | None]:
    """The nearest-rank percentiles of a histogram, as the bins' middle values."""
    total = sum(hist.values())
    if not total:
        return [None] * len(ranks)
    wanted = [max(1, math.ceil(rank * total)) for rank in ranks]
    found: list[float | None] = []
    seen = 0
    bins = sorted(hist.items())
    at = 0
    for need in wanted:
        while seen + bins[at][1] < need:
            seen += bins[at][1]
            at += 1
        found.append(_bin_value(bins[at][0]))
    return found
