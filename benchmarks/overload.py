"""
The overload study: what each way of limiting a client does to an upstream it cannot see.

    python -m benchmarks.overload            # every case; charts and a report in results/
    python -m benchmarks.overload --quick    # shorter runs, no files

Everything runs in one process on virtual time (``resilience.testing.virtual_time``), so a
minute of traffic takes about a second. The upstream has a capacity of ``C`` concurrent
requests that its clients are not told. Up to ``C`` in flight, a request takes the service
time (uniform in ``[0.5, 1.5] * S``); above it the latency grows with the queue
(``* n / C``), and beyond ``2 C`` (the queue overflows) a request fails with probability
``(n - 2 C) / n``: an overloaded server gets slower *and* wastes work on errors, so
sending more lowers goodput.

Load is open-loop: Poisson arrivals at a share of the capacity ``C / S`` requests/s.
Each arrival makes one call through the client under test; a call the client refuses
(no permit at once, or throttled) is shed, fast. The cases:

- *steady*: 0.8x capacity for the whole run;
- *step*: 0.8x, then 3x from a third of the way in;
- *drop*: 0.8x throughout, and the capacity falls to a third halfway.

The clients: no limit; ``@bounded`` with a fixed limit (too low, about right, too high);
``AdaptiveLimit`` with AIMD and Gradient2; ``@throttled`` (k = 2 and k = 1.1). A fourth
case, *outage*, has every request fail and compares ``@retry(attempts=5)`` with the same
policy drawing on a ``RetryQuota``: the retries each sends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import pathlib
import random
import sys
import time

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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

C = 16  # the upstream's concurrency capacity, unknown to the clients
S = 0.05  # the service time, seconds
CAPACITY_RPS = C / S


class Overloaded(Exception):
    """The upstream failed the request because it was overloaded (or down)."""


class Upstream:
    """A server with *capacity* slots: slower and failing above it (see the module doc)."""

    def __init__(self, clock: testing.FakeClock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.capacity = C
        self.inflight = 0
        self.down = False
        self.arrivals: list[float] = []

    async def call(self) -> None:
        self.inflight += 1
        self.arrivals.append(self.clock.monotonic())
        n = self.inflight
        try:
            over = max(0.0, (n - 2 * self.capacity) / n)
            latency = S * (0.5 + self.rng.random()) * max(1.0, n / self.capacity)
            await self.clock.asleep(latency)
            if self.down or self.rng.random() < over:
                raise Overloaded
        finally:
            self.inflight -= 1


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


def adaptive(algorithm: str) -> Client:
    def make(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        limit = AdaptiveLimit(algorithm=algorithm, initial=4, max_limit=200)

        @bounded(limit=limit, key="client", timeout=0.0)
        async def client() -> None:
            await call()

        return client

    return make


def throttle(k: float) -> Client:
    def make(call: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @throttled(k=k, window=10.0, key="client", rand=random.Random(7).random)
        async def client() -> None:
            await call()

        return client

    return make


CLIENTS: dict[str, Client] = {
    "no limit": no_limit,
    "fixed 4 (too low)": fixed(4),
    "fixed 16 (= C)": fixed(16),
    "fixed 64 (too high)": fixed(64),
    "AIMD": adaptive("aimd"),
    "Gradient2": adaptive("gradient2"),
    "@throttled k=2": throttle(2.0),
    "@throttled k=1.1": throttle(1.1),
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
    adaptive_pool = name in ("AIMD", "Gradient2")

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


def outage(duration: float, quota: bool) -> tuple[int, int]:
    """Every request fails; return (calls, retries sent) for @retry(attempts=5)."""
    testing.reset()
    with testing.virtual_time() as clock:
        rng = random.Random(3)
        upstream = Upstream(clock, rng)
        upstream.down = True
        policy = {"budget": RetryQuota()} if quota else {}
        calls = 0

        @retry(attempts=5, backoff=Backoff(base=0.05, max=1.0), on=Overloaded, **policy)  # type: ignore[arg-type]
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


def recovery(run: Run) -> float:
    """
    Seconds after the drop until every later 1 s window is healthy.

    Healthy: under 10% errors and a goodput of at least 85% of the new capacity.
    """
    drop = run.duration / 2
    capacity = (C // 3) / S
    windows = [drop + i * 0.5 for i in range(int((run.duration - drop - 1.0) / 0.5) + 1)]
    healthy = [
        run.error_share(w, w + 1.0) < 0.1 and run.goodput(w, w + 1.0) >= 0.85 * capacity
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
            style = "-" if name in ("AIMD", "Gradient2") else ":"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs; write no files")
    args = parser.parse_args(argv)
    duration = 15.0 if args.quick else 30.0
    began = time.perf_counter()

    baseline = simulate("steady", "unloaded", fixed(C), duration)
    unloaded_p99 = baseline.p(0.99)
    runs: dict[str, dict[str, Run]] = {}
    for case in ("steady", "step", "drop"):
        runs[case] = {
            name: simulate(case, name, client, duration) for name, client in CLIENTS.items()
        }

    lines = [
        "# Overload study (virtual time)",
        "",
        f"Upstream capacity C = {C} concurrent, service time {S * 1000:.0f} ms "
        f"({CAPACITY_RPS:.0f} req/s); {duration:g} s per run; unloaded p99 "
        f"{unloaded_p99 * 1000:.1f} ms.",
        "",
    ]
    for case, by_name in runs.items():
        start = duration / 3 if case == "step" else (duration / 2 if case == "drop" else 0.0)
        lines += [
            f"## {case} (measured from {start:g} s)",
            "",
            "| client | goodput req/s | p50 ms | p99 ms | errors | shed | upstream load x cap |",
            "|---|---|---|---|---|---|---|",
        ]
        cap = CAPACITY_RPS if case != "drop" else CAPACITY_RPS / 3
        for name, run in by_name.items():
            lines.append(
                f"| {name} | {run.goodput(start):.0f} | {run.p(0.5, start) * 1000:.1f} | "
                f"{run.p(0.99, start) * 1000:.1f} | {run.error_share(start):.1%} | "
                f"{sum(t >= start for t in run.shed)} | "
                f"{run.load(start, duration) / cap:.2f} |"
            )
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

    checks = []
    for case in ("steady", "step"):
        start = duration / 3 if case == "step" else 0.0
        by_name = runs[case]
        best = max(by_name[n].goodput(start) for n in CLIENTS if n.startswith("fixed"))
        for algo in ("Gradient2", "AIMD"):
            share = by_name[algo].goodput(start) / best
            checks.append((f"{case}: {algo} goodput >= 90% of the best fixed", share >= 0.9, share))
        p99 = by_name["Gradient2"].p(0.99, start) / unloaded_p99
        checks.append((f"{case}: Gradient2 p99 <= 2x unloaded", p99 <= 2.0, p99))
    for algo in ("Gradient2", "AIMD"):
        recovered = recovery(runs["drop"][algo])
        checks.append((f"drop: {algo} recovers within 10 s", recovered <= 10.0, recovered))
    step = runs["step"]
    load = step["@throttled k=1.1"].load(duration / 3 + 5.0, duration) / CAPACITY_RPS
    checks.append(("step: @throttled (k=1.1) load <= 1.1x capacity", load <= 1.1, load))
    load2 = step["@throttled k=2"].load(duration / 3 + 5.0, duration) / CAPACITY_RPS
    checks.append(("step: @throttled (k=2) load, for reference", True, load2))
    checks.append(
        (
            "outage: RetryQuota retries < 10% of calls",
            quota / quota_calls < 0.1,
            quota / quota_calls,
        )
    )
    checks.append(("outage: plain @retry sends 4x", plain / calls >= 3.9, plain / calls))

    lines += ["## checks", "", "| check | measured | verdict |", "|---|---|---|"]
    for label, ok, value in checks:
        lines.append(f"| {label} | {value:.3f} | {'pass' if ok else 'FAIL'} |")
    elapsed = time.perf_counter() - began
    lines += ["", f"Ran in {elapsed:.1f} s of real time."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "overload.md").write_text(text)
        chart(runs, RESULTS / "overload.png")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
