"""
Benchmark scenario: what the live page costs an application while a page is attached.

The application is a guarded, traced handler doing about 0.2 ms of its own work (what a
small request handler spends building its answer). Three contenders run the same handler:
with nothing watching; with ``RollingMetrics`` counting its calls (what ``serve()`` attaches)
but no page connected; and with the page served and an event-stream client attached (a
thread reading ``/events`` in this very process, so its reads compete with the application
for the GIL: harder than a browser in another process). Each contender switches the
dashboard into its own state on its first call (pausing the publisher, detaching the
metrics), so all three are timed round-robin against one server.
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


def _setup():
    _BENCH.append(_Bench())

    def teardown() -> None:
        bench = _BENCH.pop()
        bench.close()

    return teardown


def _bare() -> int:
    _BENCH[0].want("bare")
    return _handler()


def _metrics_only() -> int:
    _BENCH[0].want("metrics")
    return _handler()


def _page_attached() -> int:
    _BENCH[0].want("page")
    return _handler()


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
                "'resilience' is the handler while the page is served, its SSE client attached "
                "and the rolling metrics counting: the page itself (one snapshot a second, "
                "one frame to each client) is the difference from the row above it."
            ),
            setup=_setup,
        )
    ]


def targets() -> list[Target]:
    return [
        Target(
            TITLE,
            "resilience",
            "metrics counting (no page)",
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


def reports() -> list[str]:
    """The page's own CPU while attached, by store size: the low-noise form of the claim."""
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
    for size in (10, 200):
        frames, share, rate = _page_share(size)
        lines.append(f"| {size} | {frames} | {share:.3%} | {rate:,.0f} |")
    return ["\n".join(lines)]
