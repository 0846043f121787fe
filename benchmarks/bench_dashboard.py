"""
Benchmark scenario: what the live page costs an application while a page is attached.

The application is a guarded, traced handler doing about 0.2 ms of its own work (what a
small request handler spends building its answer). Three contenders run the same handler:
with nothing watching (no page, no metrics); with ``RollingMetrics`` counting its calls
(what ``serve()`` attaches) but no page connected; and with the page served and an
event-stream client attached (a thread reading ``/events`` in this very process, so its
reads compete with the application for the GIL: harder than a browser in another
process). The claim compares the last with the first: everything the page brings.

One "call" of a contender is a block of handler calls lasting about a second (calibrated
once), so every measurement of the attached page holds at least one frame (one snapshot,
one JSON encoding, one write): a 75 ms measurement would mostly miss them. Each block
first switches the dashboard into its contender's state (pausing the publisher, detaching
the metrics); the blocks run round-robin, ``REPEATS`` times each, and the report gives
the medians. Blocks are timed in process CPU (``time.process_time``: every thread of this
process, the page's included), so other processes on a shared machine do not blur what
the page adds; under the GIL a page thread's CPU is time the application does not run.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.request

from benchmarks._harness import Scenario, Target
from resilience import circuit_breaker, traced
from resilience.dashboard import serve
from resilience.stores import MemoryStore
from resilience.telemetry import RollingMetrics


_STORE = MemoryStore()
_WORK = 4000  # loop steps: about 0.2 ms of pure Python on the reference machine
_BLOCK_SECONDS = 1.0  # one measured "call": the publisher's interval, so >= 1 frame each
REPEATS = 15


@traced(name="checkout", log=False)
@circuit_breaker(name="checkout", store=_STORE, failure_threshold=5)
def _handler() -> int:
    total = 0
    for step in range(_WORK):
        total += step
    return total


class _Bench:
    """One dashboard, one SSE client, and the state each contender wants."""

    def __init__(self) -> None:
        self.metrics = RollingMetrics()
        self.page = serve(0, store=_STORE, metrics=self.metrics)
        self.page.pause(True)
        self.metrics.detach()
        self.mode = "bare"
        self.frames = 0
        self._reply = urllib.request.urlopen(self.page.url + "events", timeout=30)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for line in self._reply:
                if line.startswith(b"data: "):
                    self.frames += 1
        except (OSError, ValueError):
            return

    def want(self, mode: str) -> None:
        if self.mode == mode:
            return
        self.mode = mode
        if mode == "bare":
            self.metrics.detach()
        else:
            self.metrics.attach()
        self.page.pause(mode != "page")

    def close(self) -> None:
        self.metrics.detach()  # else every later scenario pays a listening handler
        self._reply.close()
        self.page.stop()


_BENCH: list[_Bench] = []
_CALLS: list[int] = []


def _calls_per_block() -> int:
    """Handler calls that take about ``_BLOCK_SECONDS`` on this machine now."""
    import time

    started = time.perf_counter()
    done = 0
    while time.perf_counter() - started < 0.2:
        _handler()
        done += 1
    return max(1, round(done * _BLOCK_SECONDS / (time.perf_counter() - started)))


def _setup():
    _BENCH.append(_Bench())
    _CALLS[:] = [_calls_per_block()]

    def teardown() -> None:
        bench = _BENCH.pop()
        bench.close()

    return teardown


def _block(mode: str) -> int:
    _BENCH[0].want(mode)
    total = 0
    for _ in range(_CALLS[0]):
        total += _handler()
    return total


def _bare() -> int:
    return _block("bare")


def _metrics_only() -> int:
    return _block("metrics")


def _page_attached() -> int:
    return _block("page")


TITLE = "dashboard: a 0.2 ms traced, guarded handler while the live page is attached"


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            TITLE,
            "sync",
            {
                "bare call": _bare,
                "metrics counting (no page)": _metrics_only,
                "resilience": _page_attached,
            },
            note=(
                "one measured call is a block of about 1 s of handler calls, timed in process "
                "CPU (every thread of this process); 'resilience' is "
                "the handler while the page is served, its SSE client attached and the "
                "rolling metrics counting (through @traced's call tap); 'bare call' has "
                "neither page nor metrics"
            ),
            setup=_setup,
            repeats=REPEATS,
            timer="process",
        )
    ]


def targets() -> list[Target]:
    return [
        Target(
            TITLE,
            "resilience",
            "bare call",
            1.01,
            "an attached page costs the application at most 1% of its throughput",
        )
    ]


def _populated(size: int) -> MemoryStore:
    """A store holding *size* breakers, limiters and pools (a third of the breakers open)."""
    from resilience import bounded, rate_limited

    store = MemoryStore()
    for n in range(size):

        @circuit_breaker(name=f"upstream-{n}", store=store, failure_threshold=1, on=KeyError)
        def call(fail: bool) -> int:
            if fail:
                raise KeyError
            return 1

        with contextlib.suppress(KeyError):
            call(n % 3 == 0)
        rate_limited(rate=100, per=1.0, key=f"api-{n}", store=store)(lambda: 1)()
        bounded(limit=10, key=f"pool-{n}", store=store)(lambda: 1)()
    return store


def _page_share(size: int, seconds: float = 4.0) -> tuple[int, float, float]:
    """Frames sent, the page threads' CPU share, and the handler's calls per second."""
    import time

    store = _populated(size)
    with RollingMetrics() as metrics, serve(0, store=store, metrics=metrics) as page:
        reply = urllib.request.urlopen(page.url + "events", timeout=30)
        reader = threading.Thread(target=lambda: [None for _ in reply], daemon=True)
        reader.start()
        spent, started = page.cpu_seconds, time.monotonic()
        calls = 0
        while time.monotonic() - started < seconds:
            _handler()
            calls += 1
        elapsed = time.monotonic() - started
        share = (page.cpu_seconds - spent) / elapsed
        frames = page.frames
        reply.close()
    return frames, share, calls / elapsed


def _tap_cost(repeats: int = 9, calls: int = 20_000) -> tuple[float, float]:
    """CPU seconds of one quiet traced call, bare and with the metrics' tap (min of repeats)."""
    import time

    @traced(name="tap-probe", log=False)
    def probe() -> int:
        return 1

    def once() -> float:
        started = time.process_time()
        for _ in range(calls):
            probe()
        metrics._drain()  # the drainer thread's share: counting what the tap queued
        return (time.process_time() - started) / calls

    bare, tapped = [], []
    metrics = RollingMetrics()
    for _ in range(repeats):
        bare.append(once())
        metrics.attach()
        try:
            tapped.append(once())
        finally:
            metrics.detach()
    return min(bare), min(tapped)


def _handler_cpu(repeats: int = 9, calls: int = 200) -> float:
    """CPU seconds of one bare handler call (min of repeats)."""
    import time

    found = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            _handler()
        found.append((time.process_time() - started) / calls)
    return min(found)


def reports() -> list[str]:
    """The page's cost in its two low-noise parts: the page's threads, the per-call tap."""
    lines = [
        "### What the live page costs while attached",
        "",
        "The handler runs in a loop for 4 s while the page is served with one event-stream",
        "client attached; the page's threads (publisher and stream writer) time their own CPU",
        "(`Dashboard.cpu_seconds`, from `time.thread_time`). Their share of one core is what the",
        "page takes from the application at most.",
        "",
        "| store size (breakers, limiters, pools each) | frames sent | page CPU, share of one core | handler calls/s |",
        "|---:|---:|---:|---:|",
    ]
    shares = {}
    for size in (10, 200):
        frames, share, rate = _page_share(size)
        shares[size] = share
        lines.append(f"| {size} | {frames} | {share:.3%} | {rate:,.0f} |")
    bare, tapped = _tap_cost()
    handler = _handler_cpu()
    tap = max(0.0, tapped - bare) / handler
    lines += [
        "",
        "The other part is on the application's own thread: `serve()`'s `RollingMetrics`",
        "counts each traced call through `@traced`'s call tap (no event is built). Its price",
        "is a quiet traced call's CPU with and without the tap (minimum of 9 runs of 20,000",
        "calls), as a share of the handler's own CPU (minimum of 9 runs). The sum is the",
        "page's whole cost to this handler; the round-robin scenario above measures the same",
        "end to end, but its blocks vary by more than 1% on a shared machine.",
        "",
        "| quiet traced call | with the tap | tap, per call | handler CPU | tap share | page threads (10) | total |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {bare * 1e9:,.0f} ns | {tapped * 1e9:,.0f} ns | {(tapped - bare) * 1e9:,.0f} ns "
        f"| {handler * 1e6:,.0f} us | {tap:.2%} | {shares[10]:.2%} | {tap + shares[10]:.2%} |",
    ]
    return ["\n".join(lines)]
