"""
The overload study: what each way of limiting a client does to an upstream it cannot see.

    python -m benchmarks.overload            # every case; charts and a report
    python -m benchmarks.overload --quick    # shorter runs, no files

Everything runs in one process on virtual time (``resilience.testing.virtual_time``), so a
minute of traffic takes about a second. The upstream behaves as a real server with
admission control does: ``C`` workers that its clients are not told about, each serving a
request in the service time (uniform in ``[0.5, 1.5] * S``), and a FIFO queue of ``C``
more requests: a request that finds every worker busy waits its turn (latency grows with
queueing above ``C``); one that finds the queue full is rejected at once with a 503
(``Overloaded``, costing a millisecond and no work). Every client meets the same upstream.

Load is open-loop: Poisson arrivals at a share of the capacity ``C / S`` requests/s.
Each arrival makes one call through the client under test; a call the client refuses
(no permit at once, or throttled) is shed, fast. The cases:

- *steady*: 0.8x capacity for the whole run;
- *step*: 0.8x, then 3x from a third of the way in;
- *drop*: 0.8x throughout, and the capacity (workers and queue) falls to a third halfway.

The clients: no limit; ``@bounded`` with a fixed limit (too low, about right, too high);
``AdaptiveLimit`` with Gradient2, AIMD (drops: the upstream's errors) and AIMD with a
``timeout`` of twice the usual latency (a slower call is a drop too); ``@throttled``
(k = 2, the SRE book's, and k = 1.1), over a window of a third of the run. A fourth case,
*outage*, has every request fail and compares ``@retry(attempts=5)`` with the same policy
drawing on a ``RetryQuota``: the retries each sends.

Earlier versions of this upstream had no queue bound and failed requests with a
probability growing above ``2 C`` *after* serving them: past capacity its queue grew
without end, and a throttle admitting ``k`` times the accepts drove it into collapse.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import math
import os
import pathlib
import random
import sys
import time

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from resilience import (
    AdaptiveLimit,
    Backoff,
    BoundedTimeoutError,
    RetryQuota,
    ThrottledError,
    bounded,
    get_bounded,
    retry,
    testing,
    throttled,
)


HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMAGES = HERE.parent / "docs" / "images"

C = 16  # the upstream's concurrency capacity, unknown to the clients
S = 0.05  # the mean service time, seconds
REJECT = 0.001  # what a rejection (a 503 from a full queue) takes, seconds
CAPACITY_RPS = C / S
DROPPED_RPS = (C // 3) / S  # the capacity after the drop


class Overloaded(Exception):
    """The upstream failed the request because it was overloaded (or down)."""


class Upstream:
    """
    A server with *capacity* workers and a bounded FIFO queue of as many requests.

    A request that finds a free worker is served at once; one that finds every worker busy
    waits in the queue (so latency grows with queueing above C); one that finds the queue
    full is rejected at once (a 503 costing ``REJECT`` and no work). When the capacity
    falls, workers finishing a request retire until the new capacity is reached.
    """

    def __init__(self, clock: testing.FakeClock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.capacity = C
        self.busy = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.down = False
        self.arrivals: list[float] = []

    async def call(self) -> None:
        self.arrivals.append(self.clock.monotonic())
        if self.down:
            await self.clock.asleep(REJECT)
            raise Overloaded
        if self.busy < self.capacity:
            self.busy += 1
        elif len(self.waiting) < self.capacity:
            turn = asyncio.get_running_loop().create_future()
            self.waiting.append(turn)
            await turn  # a finishing worker hands its slot over
        else:
            await self.clock.asleep(REJECT)
            raise Overloaded
        try:
            await self.clock.asleep(S * (0.5 + self.rng.random()))
        finally:
            if self.busy > self.capacity:
                self.busy -= 1  # the capacity fell: this worker retires
            elif self.waiting:
                self.waiting.popleft().set_result(None)
            else:
                self.busy -= 1


@dataclass
class Run:
    """What one client did in one case."""

    name: str
    duration: float
    ok: list[tuple[float, float]] = field(default_factory=list)  # (end, latency)
    errors: list[float] = field(default_factory=list)
    shed: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    limits: list[tuple[float, int]] = field(default_factory=list)

    def goodput(self, start: float = 0.0, end: float | None = None) -> float:
        end = self.duration if end is None else end
        return sum(start <= t < end for t, _ in self.ok) / (end - start)

    def p(self, q: float, start: float = 0.0, end: float | None = None) -> float:
        end = self.duration if end is None else end
        values = sorted(lat for t, lat in self.ok if start <= t < end)
        if not values:
            return math.nan
        return values[min(len(values) - 1, int(q * len(values)))]

    def error_share(self, start: float = 0.0, end: float | None = None) -> float:
        end = self.duration if end is None else end
        ok = sum(start <= t < end for t, _ in self.ok)
        bad = sum(start <= t < end for t in self.errors)
        return bad / (ok + bad) if ok + bad else 0.0

    def load(self, start: float, end: float) -> float:
        """Requests per second that reached the upstream."""
        return sum(start <= t < end for t in self.arrivals) / (end - start)


Client = Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]


def no_limit(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    return call


def fixed(limit: int) -> Client:
    def make(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @bounded(limit=limit, key="client", timeout=0.0)
        async def client() -> None:
            await call()

        return client

    return make


def adaptive(algorithm: str, timeout: float | None = None) -> Client:
    def make(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        limit = AdaptiveLimit(algorithm=algorithm, initial=4, max_limit=200, timeout=timeout)

        @bounded(limit=limit, key="client", timeout=0.0)
        async def client() -> None:
            await call()

        return client

    return make


def throttle(k: float, window: float) -> Client:
    def make(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @throttled(k=k, window=window, key="client", rand=random.Random(7).random)
        async def client() -> None:
            await call()

        return client

    return make


AIMD_TIMEOUT = 2 * S  # "twice the usual latency": what a user who knows S would pick


def clients(duration: float) -> dict[str, Client]:
    """The contenders; the throttles count over a third of the run (10 s of a 30 s run)."""
    window = duration / 3
    return {
        "no limit": no_limit,
        "fixed 4 (too low)": fixed(4),
        "fixed 16 (= C)": fixed(C),
        "fixed 64 (too high)": fixed(64),
        "Gradient2": adaptive("gradient2"),
        "AIMD": adaptive("aimd"),
        f"AIMD timeout={AIMD_TIMEOUT * 1000:.0f}ms": adaptive("aimd", AIMD_TIMEOUT),
        "@throttled k=2": throttle(2.0, window),
        "@throttled k=1.1": throttle(1.1, window),
    }


def rate_at(case: str, t: float, duration: float) -> float:
    """Arrivals per second at *t*."""
    if case == "step" and t >= duration / 3:
        return 3.0 * CAPACITY_RPS
    return 0.8 * CAPACITY_RPS


async def drive(
    clock: testing.FakeClock, case: str, name: str, client: Client, duration: float, seed: int
) -> Run:
    rng = random.Random(seed)
    upstream = Upstream(clock, rng)
    run = Run(name, duration)
    call = client(upstream.call)
    tasks: set[asyncio.Task[None]] = set()
    adaptive_pool = name.startswith(("AIMD", "Gradient2"))

    async def one() -> None:
        started = clock.monotonic()
        try:
            await call()
        except (BoundedTimeoutError, ThrottledError):
            run.shed.append(started)
        except Overloaded:
            run.errors.append(clock.monotonic())
        else:
            run.ok.append((clock.monotonic(), clock.monotonic() - started))

    async def sample() -> None:
        while clock.monotonic() < duration:
            await clock.asleep(0.25)
            if adaptive_pool:
                run.limits.append((clock.monotonic(), get_bounded("client").limit))

    sampler = asyncio.create_task(sample())
    arrivals = random.Random(seed + 1)
    while (now := clock.monotonic()) < duration:
        if case == "drop":
            upstream.capacity = C if now < duration / 2 else C // 3
        await clock.asleep(arrivals.expovariate(rate_at(case, now, duration)))
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, sampler)
    run.arrivals = upstream.arrivals
    return run


def simulate(case: str, name: str, client: Client, duration: float, seed: int = 1) -> Run:
    testing.reset()
    with testing.virtual_time() as clock:
        return asyncio.run(drive(clock, case, name, client, duration, seed))


def simulate_named(case: str, name: str, duration: float) -> Run:
    """``simulate`` for the contender called *name* (a worker process can pickle this)."""
    return simulate(case, name, clients(duration)[name], duration)


def outage(duration: float, quota: bool) -> tuple[int, int]:
    """Every request fails; return (calls, retries sent) for @retry(attempts=5)."""
    testing.reset()
    with testing.virtual_time() as clock:
        rng = random.Random(3)
        upstream = Upstream(clock, rng)
        upstream.down = True
        budget = RetryQuota() if quota else None
        calls = 0

        @retry(attempts=5, backoff=Backoff(base=0.05, max=1.0), on=Overloaded, budget=budget)
        async def client() -> None:
            await upstream.call()

        async def one() -> None:
            with contextlib.suppress(Overloaded):
                await client()

        async def main() -> None:
            nonlocal calls
            tasks = []
            arrivals = random.Random(4)
            while clock.monotonic() < duration:
                await clock.asleep(arrivals.expovariate(0.5 * CAPACITY_RPS))
                calls += 1
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)

        asyncio.run(main())
        return calls, len(upstream.arrivals) - calls


def recovery(run: Run, max_errors: float = 0.1) -> float:
    """
    Seconds after the drop until every later 1 s window is healthy.

    Healthy: errors under *max_errors* and a goodput of at least 85% of the new capacity.
    """
    drop = run.duration / 2
    capacity = DROPPED_RPS
    windows = [drop + i * 0.5 for i in range(int((run.duration - drop - 1.0) / 0.5) + 1)]
    healthy = [
        run.error_share(w, w + 1.0) < max_errors and run.goodput(w, w + 1.0) >= 0.85 * capacity
        for w in windows
    ]
    for i in range(len(windows)):
        if all(healthy[i:]):
            return windows[i] - drop
    return math.inf


def chart(runs: dict[str, dict[str, Run]], path: pathlib.Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(runs)
    figure, axes = plt.subplots(len(cases), 3, figsize=(16, 4 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        for name, run in runs[case].items():
            edges = [i * 1.0 for i in range(int(run.duration))]
            goodput = [run.goodput(t, t + 1.0) for t in edges]
            p99 = [run.p(0.99, t, t + 1.0) * 1000 for t in edges]
            style = "-" if name.startswith(("AIMD", "Gradient2")) else ":"
            axes[row][0].plot(edges, goodput, style, label=name)
            axes[row][1].plot(edges, p99, style, label=name)
            if run.limits:
                axes[row][2].plot(*zip(*run.limits, strict=True), label=name)
        axes[row][0].set_title(f"{case}: goodput (req/s)")
        axes[row][1].set_title(f"{case}: p99 latency of successes (ms)")
        axes[row][1].set_yscale("log")
        axes[row][2].set_title(f"{case}: adaptive limit (C = {C}, then {C // 3} on drop)")
        for ax in axes[row]:
            ax.set_xlabel("virtual seconds")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    axes[0][2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def case_start(case: str, duration: float) -> float:
    """Where a case's overload begins (its tables measure from there)."""
    return {"step": duration / 3, "drop": duration / 2}.get(case, 0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs; write no files")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(3, os.cpu_count() or 1),
        help="worker processes for the runs (each run is seeded: results do not depend on it)",
    )
    args = parser.parse_args(argv)
    quiet_logs()
    duration = 15.0 if args.quick else 30.0
    began = time.perf_counter()

    baseline = simulate("steady", "unloaded", fixed(C), duration)
    unloaded_p99 = baseline.p(0.99)
    cases = ("steady", "step", "drop")
    names = list(clients(duration))
    jobs = [(case, name) for case in cases for name in names]
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs), initializer=quiet_logs) as pool:
        done = pool.map(simulate_named, *zip(*jobs, strict=True), [duration] * len(jobs))
        results = dict(zip(jobs, done, strict=True))
    runs = {case: {name: results[case, name] for name in names} for case in cases}

    lines = [
        "# Overload study (virtual time)",
        "",
        f"Upstream: C = {C} workers and a queue of {C} (a full queue rejects at once), "
        f"service time {S * 1000:.0f} ms on average ({CAPACITY_RPS:.0f} req/s; "
        f"{DROPPED_RPS:.0f} req/s after the drop); {duration:g} s per run; unloaded p99 "
        f"{unloaded_p99 * 1000:.1f} ms. `settled` columns: the last third of the run "
        "(the throttles' window has passed since the overload began).",
        "",
    ]
    settled = 2 * duration / 3
    for case, by_name in runs.items():
        start = case_start(case, duration)
        cap = DROPPED_RPS if case == "drop" else CAPACITY_RPS
        lines += [
            f"## {case} (measured from {start:g} s)",
            "",
            "| client | goodput req/s | p50 ms | p99 ms | errors | shed | load x cap "
            "| settled: load x cap | settled: goodput x cap |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, run in by_name.items():
            lines.append(
                f"| {name} | {run.goodput(start):.0f} | {run.p(0.5, start) * 1000:.1f} | "
                f"{run.p(0.99, start) * 1000:.1f} | {run.error_share(start):.1%} | "
                f"{sum(t >= start for t in run.shed)} | "
                f"{run.load(start, duration) / cap:.2f} | "
                f"{run.load(settled, duration) / cap:.2f} | "
                f"{run.goodput(settled) / cap:.2f} |"
            )
        lines.append("")

    lines += [
        "## drop: recovery (seconds after the drop until every later 1 s window is healthy)",
        "",
        "| client | goodput >= 85% of the new capacity | and errors < 10% |",
        "|---|---|---|",
    ]
    for name, run in runs["drop"].items():
        if name.startswith(("AIMD", "Gradient2")):
            lines.append(f"| {name} | {recovery(run, max_errors=1.0):g} s | {recovery(run):g} s |")
    lines.append("")

    calls, plain = outage(duration / 2, quota=False)
    quota_calls, quota = outage(duration / 2, quota=True)
    lines += [
        "## outage (every request fails)",
        "",
        "| client | calls | retries sent | retries / calls |",
        "|---|---|---|---|",
        f"| @retry(attempts=5) | {calls} | {plain} | {plain / calls:.2f} |",
        f"| @retry(attempts=5, budget=RetryQuota()) | {quota_calls} | {quota} | "
        f"{quota / quota_calls:.3f} |",
        "",
    ]

    targets: list[tuple[str, bool, float]] = []
    for case in ("steady", "step"):
        start = case_start(case, duration)
        by_name = runs[case]
        best = max(run.goodput(start) for name, run in by_name.items() if name.startswith("fixed"))
        share = by_name["Gradient2"].goodput(start) / best
        targets.append((f"{case}: Gradient2 goodput >= 90% of the best fixed", share >= 0.9, share))
        p99 = by_name["Gradient2"].p(0.99, start) / unloaded_p99
        targets.append((f"{case}: Gradient2 p99 <= 2x unloaded", p99 <= 2.0, p99))
        share = by_name["AIMD"].goodput(start) / best
        targets.append((f"{case}: AIMD goodput >= 90% of the best fixed", share >= 0.9, share))
    recovered = recovery(runs["drop"]["Gradient2"])
    targets.append(("drop: Gradient2 recovers within 10 s", recovered <= 10.0, recovered))
    throttle_k = runs["step"]["@throttled k=1.1"]
    load = throttle_k.load(settled, duration) / CAPACITY_RPS
    targets.append(("step: @throttled (k=1.1) settled load <= 1.1x capacity", load <= 1.1, load))
    kept = throttle_k.goodput(settled) / CAPACITY_RPS
    targets.append(("step: ... while its goodput stays >= 0.9x capacity", kept >= 0.9, kept))
    share = quota / quota_calls
    targets.append(("outage: RetryQuota retries < 10% of calls", share < 0.1, share))
    targets.append(("outage: plain @retry sends 4x", plain / calls >= 3.9, plain / calls))

    notes = [
        ("drop: AIMD recovers within 10 s", recovery(runs["drop"]["AIMD"])),
        (
            f"drop: AIMD timeout={AIMD_TIMEOUT * 1000:.0f}ms recovers within 10 s",
            recovery(runs["drop"][f"AIMD timeout={AIMD_TIMEOUT * 1000:.0f}ms"]),
        ),
        (
            "step: @throttled (k=2) settled load x capacity",
            runs["step"]["@throttled k=2"].load(settled, duration) / CAPACITY_RPS,
        ),
    ]

    lines += ["## targets (issue 16)", "", "| target | measured | verdict |", "|---|---|---|"]
    for label, ok, value in targets:
        lines.append(f"| {label} | {value:.3f} | {'pass' if ok else 'FAIL'} |")
    lines += ["", "Not targets, for reference:", ""]
    lines += [f"- {label}: {value:.3f}" for label, value in notes]
    elapsed = time.perf_counter() - began
    lines += ["", f"Ran in {elapsed:.1f} s of real time."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "overload.md").write_text(text)
        IMAGES.mkdir(exist_ok=True)
        chart(runs, IMAGES / "overload.png")
    return 0 if all(ok for _, ok, _ in targets) else 1


def quiet_logs() -> None:
    """Keep the retry loop's debug lines (structlog) off the study's output."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


if __name__ == "__main__":
    sys.exit(main())
