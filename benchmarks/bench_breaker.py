"""
``@circuit_breaker`` against pybreaker, circuitbreaker, purgatory and aiobreaker: the closed path.

Every breaker is set up alike (open after 5 consecutive failures, 30 s before a probe) and
stays closed: each contender makes ONE successful call of a trivial function. This is the
cost a healthy service pays on every call, which is what a breaker mostly sees.

Two references frame the numbers: the bare call, and a pass-through ``@wrapt.decorator``
(the wrapping machinery our decorators are built on, doing nothing). Our target: the
cheapest breaker, at most 2x the wrapt pass-through.
"""

from __future__ import annotations

import datetime
import itertools

from collections.abc import Callable
from typing import Any

import wrapt

from benchmarks._harness import Scenario, Target, optional
from resilience import circuit_breaker


pybreaker = optional("pybreaker")
circuitbreaker = optional("circuitbreaker")
purgatory = optional("purgatory")
aiobreaker = optional("aiobreaker")

THRESHOLD = 5
RESET = 30.0
SYNC = "circuit breaker, closed path (sync)"
ASYNC = "circuit breaker, closed path (async)"

_names = itertools.count()


@wrapt.decorator
def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


@wrapt.decorator
async def apassthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return await wrapped(*args, **kwargs)


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def ours(func: Callable[..., Any]) -> Callable[..., Any]:
    name = f"bench-{next(_names)}"
    return circuit_breaker(name=name, failure_threshold=THRESHOLD, reset_timeout=RESET)(func)


def sync_peers() -> dict[str, Callable[[], Any] | None]:
    rows: dict[str, Callable[[], Any] | None] = {
        "pybreaker": None,
        "circuitbreaker": None,
        "purgatory": None,
    }
    if pybreaker is not None:
        breaker = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=RESET)
        rows["pybreaker"] = breaker(work)
    if circuitbreaker is not None:
        rows["circuitbreaker"] = circuitbreaker.circuit(
            failure_threshold=THRESHOLD, recovery_timeout=RESET
        )(work)
    if purgatory is not None:
        factory = purgatory.SyncCircuitBreakerFactory(
            default_threshold=THRESHOLD, default_ttl=RESET
        )
        rows["purgatory"] = factory(circuit="bench-sync")(work)
    return rows


def async_peers() -> dict[str, Callable[[], Any] | None]:
    rows: dict[str, Callable[[], Any] | None] = {
        "purgatory": None,
        "aiobreaker": None,
        "circuitbreaker": None,
    }
    if purgatory is not None:
        factory = purgatory.AsyncCircuitBreakerFactory(
            default_threshold=THRESHOLD, default_ttl=RESET
        )
        rows["purgatory"] = factory(circuit="bench-async")(awork)
    if aiobreaker is not None:
        breaker = aiobreaker.CircuitBreaker(
            fail_max=THRESHOLD, timeout_duration=datetime.timedelta(seconds=RESET)
        )
        rows["aiobreaker"] = breaker(awork)
    if circuitbreaker is not None:
        rows["circuitbreaker"] = circuitbreaker.circuit(
            failure_threshold=THRESHOLD, recovery_timeout=RESET
        )(awork)
    return rows


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            title=SYNC,
            kind="sync",
            contenders={
                "bare call": work,
                "wrapt pass-through": passthrough(work),
                "resilience": ours(work),
                **sync_peers(),
            },
            baseline="bare call",
            note="one successful call through a closed breaker (threshold 5, reset 30 s)",
        ),
        Scenario(
            title=ASYNC,
            kind="async",
            contenders={
                "bare call": awork,
                "wrapt pass-through": apassthrough(awork),
                "resilience": ours(awork),
                **async_peers(),
            },
            baseline="bare call",
            note="one awaited successful call through a closed breaker (threshold 5, reset 30 s)",
        ),
    ]


def targets() -> list[Target]:
    claims = []
    for title, peers in (
        (SYNC, ("pybreaker", "circuitbreaker", "purgatory")),
        (ASYNC, ("purgatory", "aiobreaker", "circuitbreaker")),
    ):
        claims.append(
            Target(title, "resilience", "wrapt pass-through", 2.0, "at most 2x bare wrapt")
        )
        claims.extend(
            Target(title, "resilience", peer, 1.0, f"cheaper than {peer}") for peer in peers
        )
    return claims
