"""
All five of our decorators stacked on one function, against the best peer combination.

Ours: ``@traced @retry @circuit_breaker @rate_limited @bounded`` (one wrapt wrapper in all,
since stacked decorators join one pipeline). Peers, sync: tenacity + pybreaker + a
``threading.Semaphore``; async: tenacity + aiobreaker + aiolimiter + ``asyncio.Semaphore``.
The peers have no tracing layer and no sliding-window limiter in the sync stack, so they do
less work than ours. The limiter budgets are far above the call rate, so nobody ever waits.

Built only when all five names import from ``resilience``; otherwise skipped with a note.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

from collections.abc import Callable
from typing import Any

import wrapt

import resilience

from benchmarks._harness import Scenario, Target, optional


tenacity: Any = optional("tenacity")
pybreaker = optional("pybreaker")
aiobreaker = optional("aiobreaker")
aiolimiter = optional("aiolimiter")

NAMES = ("retry", "circuit_breaker", "rate_limited", "bounded", "traced")
MISSING = [name for name in NAMES if not hasattr(resilience, name)]

SKIPPED = (
    [f"the stack needs {', '.join(MISSING)} from `resilience` (not there yet); skipped"]
    if MISSING
    else []
)

RATE = 1_000_000  # calls per second: far above what one core can do, so no one waits
LIMIT = 10


def ok() -> int:
    return 1


async def aok() -> int:
    return 1


@wrapt.decorator
def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


@wrapt.decorator
async def apassthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return await wrapped(*args, **kwargs)


def ours(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Our five decorators, outermost first, in the order the docs recommend."""
    r: Any = resilience  # the names may not exist yet: checked by MISSING
    stack = [
        r.traced(name=name, log=False),  # spans and bus events; no log line (peers do not trace)
        r.retry(attempts=3, backoff=r.Backoff(base=0)),
        r.circuit_breaker(name=name, failure_threshold=5, reset_timeout=30.0),
        r.rate_limited(rate=RATE, per=1.0, key=name),
        r.bounded(limit=LIMIT, key=name),
    ]
    for decorate in reversed(stack):
        func = decorate(func)
    return func


def retrying() -> Any:
    """tenacity set up like our @retry: 3 attempts, zero waits, re-raise the original."""
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True
    )


def peers_sync() -> Any:
    if tenacity is None or pybreaker is None:
        return None
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    permits = threading.Semaphore(LIMIT)

    def call() -> int:
        with permits:
            return ok()

    return retrying()(breaker(call))


def peers_async() -> Any:
    if tenacity is None or aiobreaker is None or aiolimiter is None:
        return None
    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=dt.timedelta(seconds=30))
    limiter = aiolimiter.AsyncLimiter(RATE, 1.0)
    permits: list[asyncio.Semaphore] = []  # made on first use, inside the harness's loop

    async def call() -> Any:
        if not permits:
            permits.append(asyncio.Semaphore(LIMIT))
        async with permits[0], limiter:
            return await breaker.call_async(aok)

    return retrying()(call)


NOTE = (
    "one successful call through retry + breaker + rate limit + concurrency bound; ours also "
    "traces it (span + bus events, log=False: no terminal I/O), which the peer stacks do not"
)


def scenarios() -> list[Scenario]:
    if MISSING:
        return []
    return [
        Scenario(
            title="full stack, success path, sync",
            kind="sync",
            contenders={
                "bare call": ok,
                "wrapt pass-through": passthrough(ok),
                "resilience": ours(ok, "bench-stack-sync"),
                "tenacity + pybreaker + Semaphore": peers_sync(),
            },
            note=NOTE,
        ),
        Scenario(
            title="full stack, success path, async",
            kind="async",
            contenders={
                "bare call": aok,
                "wrapt pass-through": apassthrough(aok),
                "resilience": ours(aok, "bench-stack-async"),
                "tenacity + aiobreaker + aiolimiter + Semaphore": peers_async(),
            },
            note=NOTE + "; awaited in one coroutine per measurement",
        ),
    ]


def targets() -> list[Target]:
    """The whole stack, traced included, costs at most three wrapt pass-throughs."""
    if MISSING:
        return []
    return [
        Target(
            "full stack, success path, sync",
            "resilience",
            "wrapt pass-through",
            3.0,
            "all five <= 3x wrapt",
        ),
        Target(
            "full stack, success path, async",
            "resilience",
            "wrapt pass-through",
            3.0,
            "all five <= 3x wrapt",
        ),
    ]
