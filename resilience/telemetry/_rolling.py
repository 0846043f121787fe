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

Which events count: a call is a ``@traced`` call, success or failure (including a call a
guard inside refused), with its duration: given to ``count`` by ``@traced`` itself (a call
tap, ``telemetry._bus.add_tap``, into a ``CallSink`` that counts it at once), so no event
is built for it, nothing is kept per call, and the application pays about 100-300 ns a
call, not an event (``handle`` counts the same from
``resilience.trace.stop``/``.exception`` events given to it by hand). A name that is not ``@traced`` shows its ``@retry`` attempts
(``resilience.retry.attempt.stop``) as calls instead. ``resilience.retry.retry`` is a retry, ``resilience.retry.give_up`` a give-up,
and any ``*.rejected`` event or ``resilience.bounded.timeout`` a rejection.
"""

from __future__ import annotations

import bisect
import math
import threading

from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from itertools import compress, repeat, starmap
from operator import floordiv
from typing import TYPE_CHECKING, Any, Final

from resilience._validate import check_int, duration
from resilience.telemetry._bus import add_tap, attach, remove_tap
from resilience.telemetry._spans import now_ns


if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta
    from types import TracebackType

    from resilience.telemetry._bus import Event, Handle
    from resilience.typing import Clock


__all__ = ["EVENTS", "CallSink", "NameMetrics", "PyCallSink", "RollingMetrics", "percentile_bin"]

CALLS, FAILURES, RETRIES, GIVE_UPS, REJECTIONS, ATTEMPTS, ATTEMPT_FAILURES = range(7)
_COUNTERS: Final = 7

_GROWTH: Final = 1.05
_LOG_GROWTH: Final = math.log(_GROWTH)
_FLOOR: Final = 1e-6  # durations at or below a microsecond share bin 0
_CEILING: Final = 3600.0  # an hour and above: one bin
_TOP: Final = math.ceil(math.log(_CEILING / _FLOOR) / _LOG_GROWTH)

#: The event names (prefixes) the metrics count (``handle``).
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
#: What ``attach`` takes from the bus: traced calls come through ``count`` instead.
_bisect: Final = bisect.bisect_left
_bisect_right: Final = bisect.bisect_right

#: Seconds between two drains of the queued traced calls while attached (at most).
DRAIN_EVERY: Final = 0.25

_BUS_EVENTS: Final = tuple(e for e in EVENTS if not e.startswith("resilience.trace."))


#: Bin i's upper bound in whole nanoseconds (floored: the same bins for integer durations),
#: for bins 0 .. _TOP - 1: ``count`` finds a bin by bisection, in C, on ints.
_BOUNDS_NS: Final = [math.floor(_FLOOR * 1e9 * _GROWTH**i) for i in range(_TOP)]


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


class PyCallSink:
    """
    ``RollingMetrics``' call tap: each traced call counted where it ends, nothing kept per call.

    The pure-Python twin of ``_speedups.CallSink`` (``tests/test_rolling_sink.py`` holds
    the two together); not thread-safe, so the metrics use it only through the C one. Called with ``(name, elapsed_ns, failed, ended_ns)``, it counts the
    call into its name's cell: the slice (``ended_ns // width``), calls, failures and the
    latency bin (``bisect_left`` over *bounds*). When a name's calls move on to a newer
    slice, its cell becomes a record ``(name, index, calls, failures, ((bin, count), ...))``;
    ``take()`` returns those and every cell counted since, oldest first. A late call (an
    older slice) counts in the cell's slice, as ``_Series.slot`` counts it in the newest. A
    call it does not take (``ended_ns`` -1, a value out of int64, a name past *most* cells)
    goes to *spill*.
    """

    __slots__ = ("_bounds", "_cells", "_dirty", "_most", "_records", "_spill", "_width")

    def __init__(
        self, bounds: list[int], width: int, spill: Callable[[Any], object], most: int
    ) -> None:
        if width < 1 or most < 1:
            msg = "CallSink: width and most must be >= 1"
            raise ValueError(msg)
        self._bounds = list(bounds)
        self._width = width
        self._spill = spill
        self._most = most
        # name -> [index, calls, failures, hist, dirty, name]
        self._cells: dict[str, list[Any]] = {}
        self._dirty: list[list[Any]] = []
        self._records: list[tuple[str, int, int, int, tuple[tuple[int, int], ...]]] = []

    @property
    def waiting(self) -> int:
        """Records ``take()`` would return now."""
        return len(self._dirty) + len(self._records)

    def __call__(self, call: Any) -> None:
        if type(call) is not tuple or len(call) != 4:
            self._spill(call)
            return
        name, took, failed, ended = call
        if (
            type(name) is not str
            or not isinstance(took, int)
            or not isinstance(ended, int)
            or not _INT64_LOW <= took <= _INT64_HIGH
            or not 0 <= ended <= _INT64_HIGH
        ):
            self._spill(call)
            return
        bad = bool(failed)
        cell = self._cells.get(name)
        if cell is None:
            if len(self._cells) >= self._most:
                self._spill(call)
                return
            cell = self._cells[name] = [0, 0, 0, [0] * (len(self._bounds) + 1), False, name]
        index = ended // self._width
        if not cell[4]:
            cell[0] = index
            cell[4] = True
            self._dirty.append(cell)
        elif index > cell[0]:
            self._records.append(_record(cell))
            cell[0] = index
            cell[4] = True
        cell[3][_bisect(self._bounds, took)] += 1
        cell[1] += 1
        cell[2] += bad

    def take(self) -> list[tuple[str, int, int, int, tuple[tuple[int, int], ...]]]:
        """Return the records counted since the last take (and start them anew)."""
        for cell in self._dirty:
            self._records.append(_record(cell))
        self._dirty = []
        taken, self._records = self._records, []
        return taken


_INT64_LOW: Final = -(2**63)
_INT64_HIGH: Final = 2**63 - 1


def _record(cell: list[Any]) -> tuple[str, int, int, int, tuple[tuple[int, int], ...]]:
    """A dirty cell's counts as a record, and the cell emptied."""
    hist = cell[3]
    bins = tuple((at, count) for at, count in enumerate(hist) if count)
    record = (cell[5], cell[0], cell[1], cell[2], bins)
    cell[1] = cell[2] = 0
    cell[3] = [0] * len(hist)
    cell[4] = False
    return record


def _sink_type() -> type[PyCallSink] | None:
    from resilience import _deadline  # noqa: PLC0415 - the one place the accelerator is found

    speedups = _deadline._speedups
    found: type[PyCallSink] | None = (
        getattr(speedups, "CallSink", None) if speedups is not None else None
    )
    return found


#: The call sink in C, where the accelerator was built (else None). Its Python twin is the
#: reference the tests hold it to, not a fallback: a tap is called from any thread, and
#: only the C one counts atomically (under the GIL); without it the metrics keep their queue
#: (a deque's append is atomic) and count it in bulk.
CallSink: Final = _sink_type()


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
        self._width_ns = round(self._width * 1e9)
        self._clock = clock
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._lock = threading.Lock()
        self._last: _Series | None = None  # the name counted last: already the most recent
        self._handle: Handle | None = None
        # Traced calls the sink does not take (the call's policy has a clock of its own,
        # these metrics have one) wait here, appended by @traced or by the sink, until a
        # drain counts them: the drainer thread every DRAIN_EVERY seconds while attached,
        # and every snapshot(). The rest the sink counts at once, in C where it was built.
        self._pending: deque[tuple[str, int, bool, int]] = deque()
        self._sink: PyCallSink | None = (
            None
            if clock is not None or CallSink is None
            else CallSink(_BOUNDS_NS, self._width_ns, self._pending.append, self.max_names)
        )
        #: What ``@traced`` calls with each call: the sink, or the queue's own append.
        self._tap: Callable[[Any], object] = (
            self._pending.append if self._sink is None else self._sink
        )
        self._stop: threading.Event | None = None

    # -- subscription -------------------------------------------------------------------

    def attach(self) -> RollingMetrics:
        """Start counting events from the bus (again after ``detach``); return self."""
        if self._handle is None or not self._handle.attached:
            self._handle = attach(self.handle, _BUS_EVENTS)
            add_tap(self._tap)
            self._stop = stop = threading.Event()
            every = min(DRAIN_EVERY, self._width / 4)
            threading.Thread(
                target=self._drain_loop,
                args=(stop, every),
                name="resilience-rolling-metrics",
                daemon=True,
            ).start()
        return self

    def detach(self) -> None:
        """Stop counting (the counts stay readable)."""
        if self._handle is not None:
            self._handle.detach()
            self._handle = None
        remove_tap(self._tap)
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self._drain()

    def _drain_loop(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            self._drain()

    def _drain(self) -> None:
        """
        Count what the sink took and the traced calls waiting in ``_pending``, in bulk.

        The sink's records are merged per name and slice. The queued calls (C's ``zip``,
        ``min``/``max``, ``sorted``) are split by slice and by name, each group's durations
        are sorted, and the histogram is filled per occupied bin (two bisections each), not
        per call. Percentiles are only read at ``snapshot``.
        """
        sink, pending = self._sink, self._pending
        if not pending and (sink is None or not sink.waiting):
            return
        with self._lock:  # one drain at a time: the drainer, snapshot(), detach()
            if sink is not None:
                for name, index, calls, failures, bins in sink.take():
                    series = self._get(name)
                    series.traced = True
                    slot = series.slot(index)
                    counts = series.counts[slot]
                    counts[CALLS] += calls
                    counts[FAILURES] += failures
                    hist = series.hists[slot]
                    for at, count in bins:
                        hist[at] = hist.get(at, 0) + count
            # Exactly the calls queued now (a tap may append meanwhile), popped in C.
            batch = list(starmap(pending.popleft, repeat((), len(pending))))
            if batch:
                self._count_batch(batch)

    def _count_batch(self, batch: list[tuple[str, int, bool, int]]) -> None:
        names, elapsed, failed, ended = zip(*batch, strict=True)
        if self._clock is not None or -1 in ended:
            now = now_ns(self._clock)
            ended = tuple(now if self._clock is not None or e < 0 else e for e in ended)
        width = self._width_ns
        first, last = min(ended) // width, max(ended) // width
        if first == last:  # one slice: the common case
            self._count_slice(first, names, elapsed, failed)
            return
        # Calls on both sides of a slice's end: each slice's calls apart, oldest first.
        indexes = list(map(floordiv, ended, repeat(width)))
        for index in sorted(set(indexes)):
            mine = list(map(index.__eq__, indexes))
            self._count_slice(
                index,
                tuple(compress(names, mine)),
                tuple(compress(elapsed, mine)),
                tuple(compress(failed, mine)),
            )

    def _count_slice(
        self,
        index: int,
        names: tuple[str, ...],
        elapsed: tuple[int, ...],
        failed: tuple[bool, ...],
    ) -> None:
        """Count calls that all ended in slice *index*, grouped by name."""
        if names.count(names[0]) == len(names):  # one name (identity first: cheap)
            self._count_name(index, names[0], sorted(elapsed), sum(failed))
            return
        durations: dict[str, list[int]] = {}
        failures: dict[str, int] = {}
        for name, took, bad in zip(names, elapsed, failed, strict=True):
            found = durations.get(name)
            if found is None:
                durations[name] = [took]
                failures[name] = bad
            else:
                found.append(took)
                failures[name] += bad
        for name, took_ns in durations.items():
            took_ns.sort()
            self._count_name(index, name, took_ns, failures[name])

    def _count_name(self, index: int, name: str, took: list[int], failures: int) -> None:
        """Add one name's calls of slice *index*: *took* (sorted ns) and *failures*."""
        series = self._get(name)
        series.traced = True
        slot = series.slot(index)
        counts = series.counts[slot]
        counts[CALLS] += len(took)
        counts[FAILURES] += failures
        hist = series.hists[slot]
        total, at, found = len(took), 0, 0
        while at < total:  # once per occupied bin: the calls up to its bound, in one step
            found = _bisect(_BOUNDS_NS, took[at], found)
            end = total if found == _TOP else _bisect_right(took, _BOUNDS_NS[found], at)
            hist[found] = hist.get(found, 0) + end - at
            at = end

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
        # The slices are counted on ``now_ns``'s clock: the one ``@traced`` times calls on,
        # so ``count`` can place a call by the moment it ended without reading it again.
        return now_ns(self._clock) // self._width_ns

    def _get(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _Series(self.buckets)
            if len(self._series) > self.max_names:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(name)
        self._last = series
        return series

    def count(self, name: str, elapsed_ns: int, failed: bool, ended_ns: int = -1) -> None:
        """
        Count one traced call of *elapsed_ns* nanoseconds now (tests; ``@traced`` queues).

        *ended_ns*, when not -1, is when it ended on the process default's ``now_ns``
        clock (``@traced`` gives it when its policy has no clock of its own), used when
        these metrics have none either: the same clock.
        """
        with self._lock:
            self._add(name, elapsed_ns, failed, ended_ns)

    def _add(self, name: str, elapsed_ns: int, failed: bool, ended_ns: int) -> None:
        # Under the lock, once per traced call: _index and _get inlined, the bin bisected.
        if ended_ns < 0 or self._clock is not None:
            ended_ns = now_ns(self._clock)
        index = ended_ns // self._width_ns
        at = _bisect(_BOUNDS_NS, elapsed_ns)
        series = self._series.get(name)
        if series is None:
            series = self._get(name)
        elif series is not self._last:
            self._series.move_to_end(name)
        self._last = series
        series.traced = True
        slot = index % self.buckets if series.head == index else series.slot(index)
        counts = series.counts[slot]
        counts[CALLS] += 1
        if failed:
            counts[FAILURES] += 1
        hist = series.hists[slot]
        hist[at] = hist.get(at, 0) + 1

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
        """Return every name's counts over the window as of now, by name."""
        self._drain()
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
            self._pending.clear()
            if self._sink is not None:
                self._sink.take()
            self._series.clear()
            self._last = None

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
