"""
``@bounded`` against ``asyncio.Semaphore`` and ``threading.Semaphore``: a permit with room.

Each contender takes one permit of a pool that always has room, makes ONE call of a trivial
function and gives the permit back: the price of a bounded call when nobody waits.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

from benchmarks._harness import Scenario, Target
from resilience import bounded


SYNC = "permit acquire and release with room (sync)"
ASYNC = "permit acquire and release with room (async)"

_keys = itertools.count()


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def scenarios() -> list[Scenario]:
    """The permit-cost comparisons, threads and tasks."""
    ours = bounded(limit=100, key=f"bench-{next(_keys)}")(work)
    aours = bounded(limit=100, key=f"bench-{next(_keys)}")(awork)
    semaphore = threading.Semaphore(100)
    bounded_semaphore = threading.BoundedSemaphore(100)
    asem = asyncio.Semaphore(100)

    def with_semaphore() -> int:
        with semaphore:
            return work()

    def with_bounded_semaphore() -> int:
        with bounded_semaphore:
            return work()

    async def with_asyncio_semaphore() -> int:
        async with asem:
            return await awork()

    return [
        Scenario(
            title=SYNC,
            kind="sync",
            contenders={
                "bare call": work,
                "resilience": ours,
                "threading.Semaphore": with_semaphore,
                "threading.BoundedSemaphore": with_bounded_semaphore,
            },
            note="take one of 100 permits, call, release; nobody waits",
        ),
        Scenario(
            title=ASYNC,
            kind="async",
            contenders={
                "bare call": awork,
                "resilience": aours,
                "asyncio.Semaphore": with_asyncio_semaphore,
            },
            note="take one of 100 permits, await the call, release; nobody waits",
        ),
    ]


def targets() -> list[Target]:
    """A bounded async call with room costs no more than an asyncio.Semaphore around it."""
    return [
        Target(ASYNC, "resilience", "asyncio.Semaphore", 1.0, "no slower than asyncio.Semaphore")
    ]
