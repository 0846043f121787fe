"""
``@rate_limited`` against aiolimiter, limits (moving window, memory) and pyrate-limiter.

Cost: every limiter is given a huge rate (10**7 per second) so it never waits, and each
contender makes ONE admitted call of a trivial function: the price a call pays when there is
room, which is what a limiter mostly sees.

Accuracy (``python -m benchmarks.bench_rate``): a saturated real-time run after an idle spell,
reporting the windows of *per* seconds holding more than *rate* starts and the achieved rate
as a share of the budget. A bucket lets up to 2x through in the first window after idling.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time

from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._harness import Scenario, Target, optional
from resilience import rate_limited


aiolimiter = optional("aiolimiter")
limits = optional("limits")
pyrate = optional("pyrate_limiter")

HUGE = 10**7
SYNC = "rate limiter, acquire with room (sync)"
ASYNC = "rate limiter, acquire with room (async)"

_keys = itertools.count()


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def _limits_sync() -> Callable[[], Any] | None:
    if limits is None:
        return None
    from limits import RateLimitItemPerSecond, storage, strategies

    limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
    item = RateLimitItemPerSecond(HUGE)

    def call() -> int:
        if not limiter.hit(item, "bench"):
            raise RuntimeError("limited")
        return work()

    return call


def _limits_async() -> Callable[[], Awaitable[Any]] | None:
    if limits is None:
        return None
    from limits import RateLimitItemPerSecond
    from limits.aio import storage, strategies

    limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
    item = RateLimitItemPerSecond(HUGE)

    async def call() -> int:
        if not await limiter.hit(item, "bench"):
            raise RuntimeError("limited")
        return await awork()

    return call


def _pyrate_sync() -> Callable[[], Any] | None:
    if pyrate is None:
        return None
    limiter = pyrate.Limiter(pyrate.InMemoryBucket([pyrate.Rate(HUGE, pyrate.Duration.SECOND)]))

    def call() -> int:
        limiter.try_acquire("bench", blocking=False)
        return work()

    return call


def _pyrate_async() -> Callable[[], Awaitable[Any]] | None:
    if pyrate is None:
        return None
    limiter = pyrate.Limiter(pyrate.InMemoryBucket([pyrate.Rate(HUGE, pyrate.Duration.SECOND)]))

    async def call() -> int:
        await limiter.try_acquire_async("bench", blocking=False)
        return await awork()

    return call


def _aiolimiter() -> Callable[[], Awaitable[Any]] | None:
    if aiolimiter is None:
        return None
    limiter = aiolimiter.AsyncLimiter(HUGE, 1.0)

    async def call() -> int:
        async with limiter:
            return await awork()

    return call


def scenarios() -> list[Scenario]:
    """The acquire-cost comparisons, sync and async."""
    ours = rate_limited(rate=HUGE, per=1.0, key=f"bench-{next(_keys)}")(work)
    aours = rate_limited(rate=HUGE, per=1.0, key=f"bench-{next(_keys)}")(awork)
    return [
        Scenario(
            title=SYNC,
            kind="sync",
            contenders={
                "bare call": work,
                "resilience": ours,
                "limits (moving window)": _limits_sync(),
                "pyrate-limiter": _pyrate_sync(),
            },
            note="one admitted call through a sliding-window limiter with room (10**7/s)",
        ),
        Scenario(
            title=ASYNC,
            kind="async",
            contenders={
                "bare call": awork,
                "resilience": aours,
                "aiolimiter": _aiolimiter(),
                "limits (moving window)": _limits_async(),
                "pyrate-limiter": _pyrate_async(),
            },
            note="one admitted await through a limiter with room (10**7/s)",
        ),
    ]


def targets() -> list[Target]:
    """Our claim: admitting a call costs no more than aiolimiter does."""
    return [
        Target(ASYNC, "resilience", "aiolimiter", 1.0, "no slower than aiolimiter"),
        Target(ASYNC, "resilience", "aiolimiter", 0.8, "<= 0.8x aiolimiter"),
    ]


# -- accuracy under saturation (real time) ---------------------------------------------------

RATE = 50
PER = 0.2
CALLS = 400


def _report(name: str, starts: list[float]) -> tuple[str, int, int, float]:
    ordered = sorted(starts)
    worst = 0
    over = 0
    for s in ordered:
        count = bisect.bisect_left(ordered, s + PER) - bisect.bisect_left(ordered, s)
        worst = max(worst, count)
        over += count > RATE
    span = ordered[-1] - ordered[0]
    achieved = (len(ordered) - RATE) / span * PER / RATE if span > 0 else float("nan")
    return name, over, worst, achieved


async def _saturate(make: Callable[[list[float]], Callable[[], Awaitable[Any]]]) -> list[float]:
    """Warm the limiter, idle past a window, then let CALLS tasks contend; return start times.

    *make(starts)* returns the call: it records ``time.monotonic()`` in *starts* where the
    limited work begins (inside the decorated body or the limiter's block), which is what a
    server would count.
    """
    warmup: list[float] = []
    call = make(warmup)
    for _ in range(RATE):
        await call()
    await asyncio.sleep(PER * 1.5)
    starts: list[float] = []
    call = make(starts)
    await asyncio.gather(*(call() for _ in range(CALLS)))
    return starts


async def _accuracy() -> list[tuple[str, int, int, float]]:
    rows = []

    def ours(starts: list[float]) -> Callable[[], Awaitable[Any]]:
        @rate_limited(rate=RATE, per=PER, key="accuracy")
        async def call() -> None:
            starts.append(time.monotonic())

        return call

    rows.append(_report("resilience", await _saturate(ours)))
    if aiolimiter is not None:
        bucket = aiolimiter.AsyncLimiter(RATE, PER)

        def aio(starts: list[float]) -> Callable[[], Awaitable[Any]]:
            async def call() -> None:
                async with bucket:
                    starts.append(time.monotonic())

            return call

        rows.append(_report("aiolimiter", await _saturate(aio)))
    if limits is not None:
        from limits import RateLimitItemPerSecond
        from limits.aio import storage, strategies

        window = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        # limits' windows are whole seconds: RATE/PER per second is the same budget, 5x wider
        item = RateLimitItemPerSecond(round(RATE / PER))

        def lim(starts: list[float]) -> Callable[[], Awaitable[Any]]:
            async def call() -> None:
                while not await window.hit(item, "acc"):
                    stats = await window.get_window_stats(item, "acc")
                    await asyncio.sleep(max(0.001, stats.reset_time - time.time()))
                starts.append(time.monotonic())

            return call

        rows.append(_report("limits (moving window, 1 s)", await _saturate(lim)))
    if pyrate is not None:
        rate = pyrate.Rate(RATE, pyrate.Duration.SECOND * PER)
        plim = pyrate.Limiter(pyrate.InMemoryBucket([rate]))

        def pyr(starts: list[float]) -> Callable[[], Awaitable[Any]]:
            async def call() -> None:
                await plim.try_acquire_async("acc", blocking=True)
                starts.append(time.monotonic())

            return call

        rows.append(_report("pyrate-limiter", await _saturate(pyr)))
    return rows


def reports() -> list[str]:
    """The accuracy table, as a markdown section of the benchmark report."""
    lines = [
        "### Rate limiter accuracy under saturation",
        "",
        f"{CALLS} asyncio tasks contend for a budget of {RATE} per {PER} s after an idle spell;",
        "every window of the run is checked against the budget (start times recorded where the",
        "limited work begins).",
        "",
        "| limiter | windows over the limit | worst window | achieved rate / budget |",
        "|---|---:|---:|---:|",
    ]
    for name, over, worst, achieved in asyncio.run(_accuracy()):
        lines.append(f"| {name} | {over} | {worst} / {RATE} | {achieved:.1%} |")
    return ["\n".join(lines)]


def main() -> None:
    """Print the accuracy table as markdown."""
    print("\n\n".join(reports()))


if __name__ == "__main__":
    main()
