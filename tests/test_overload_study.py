"""The overload study's upstream behaves as its text says: C workers, a queue of C, fast 503s."""

from __future__ import annotations

import asyncio
import random

import pytest

from benchmarks.overload import REJECT, Overloaded, S, Upstream
from resilience.testing import FakeClock, virtual_time


async def burst(upstream: Upstream, clock: FakeClock, n: int) -> list[tuple[str, float]]:
    """Start *n* calls at once; return each one's outcome and latency."""

    async def one() -> tuple[str, float]:
        started = clock.monotonic()
        try:
            await upstream.call()
        except Overloaded:
            return "rejected", clock.monotonic() - started
        return "served", clock.monotonic() - started

    return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.parametrize("capacity", [1, 5, 16])
def test_serves_capacity_queues_capacity_and_rejects_the_rest_at_once(capacity: int) -> None:
    """3C at once: C served, C queued (served later), C rejected in REJECT seconds."""
    with virtual_time() as clock:
        upstream = Upstream(clock, random.Random(capacity))
        upstream.capacity = capacity
        outcomes = asyncio.run(burst(upstream, clock, 3 * capacity))
    served = sorted(latency for outcome, latency in outcomes if outcome == "served")
    rejected = [latency for outcome, latency in outcomes if outcome == "rejected"]
    assert (len(served), len(rejected)) == (2 * capacity, capacity)
    assert all(latency == pytest.approx(REJECT) for latency in rejected)
    assert all(0.5 * S <= latency <= 1.5 * S for latency in served[:capacity])
    assert served[-1] > 1.5 * S  # the queued ones waited for a worker first
    assert (upstream.busy, len(upstream.waiting)) == (0, 0)


def test_workers_retire_when_the_capacity_falls() -> None:
    """16 busy, then the capacity falls to 5: once the 16 finish, at most 5 are ever busy."""
    with virtual_time() as clock:
        upstream = Upstream(clock, random.Random(1))
        after: list[int] = []

        async def main() -> list[tuple[str, float]]:
            first = asyncio.gather(*(upstream.call() for _ in range(16)))
            await clock.asleep(0.0)
            upstream.capacity = 5
            second = asyncio.ensure_future(burst(upstream, clock, 10))
            await first
            while not second.done():
                after.append(upstream.busy)
                await clock.asleep(0.005)
            return await second

        outcomes = asyncio.run(main())
    assert [outcome for outcome, _ in outcomes].count("rejected") == 5  # the queue holds 5 now
    assert after
    assert max(after) <= 5
    assert (upstream.busy, len(upstream.waiting)) == (0, 0)
