"""
Type checks of the public API: never executed, checked by ``mypy --strict`` in CI.

Every decorator must keep the decorated callable's parameters and return type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import assert_type

import resilience

from resilience import (
    AdaptiveLimit,
    Backoff,
    BoundedPolicy,
    CircuitBreakerPolicy,
    RetryPolicy,
    RetryQuota,
    RetryThrottle,
    Stack,
    ThrottlePolicy,
    bounded,
    circuit_breaker,
    get_bounded,
    parse_retry_after,
    presets,
    rate_limited,
    retry,
    throttled,
    traced,
)
from resilience.chaos import inject_fault, inject_latency, inject_result, set_enabled
from resilience.http import Quota, parse_quota


@retry
def bare(a: int, b: str = "x") -> float:
    return 1.0


@retry(attempts=3, timeout=timedelta(seconds=5), backoff=Backoff(jitter="full"))
def with_fields(a: int) -> str:
    return str(a)


@retry(RetryPolicy(attempts=2))
async def coroutine(a: int) -> bytes:
    return b""


@retry
def generator(n: int) -> Iterator[int]:
    yield n


@retry(attempt_timeout=1.0)
async def async_generator(n: int) -> AsyncIterator[int]:
    yield n


@circuit_breaker
def breaker_bare(a: int) -> str:
    return str(a)


@circuit_breaker(CircuitBreakerPolicy(name="typed", failure_threshold=2))
async def breaker_async(a: int) -> int:
    return a


@rate_limited(rate=10, per=1.0)
def limited(a: int, *, b: str) -> bytes:
    return b""


@bounded(BoundedPolicy(limit=3))
async def permit(a: int) -> float:
    return 1.0


@traced
def traced_bare(a: int) -> int:
    return a


@traced("named")
async def traced_named() -> str:
    return ""


@traced("outer")
@retry(attempts=2)
@circuit_breaker(name="stacked")
@rate_limited(rate=5)
@bounded(limit=2)
async def stacked(a: int, b: str = "") -> list[int]:
    return [a]


@Stack(retry=RetryPolicy(), bounded=BoundedPolicy(limit=1))
def via_stack(a: int) -> tuple[int, str]:
    return (a, "")


class Service:
    @retry
    def method(self, a: int) -> int:
        return a

    @retry
    @classmethod
    def klass(cls, a: int) -> str:
        return ""

    @classmethod
    @retry
    def klass_below(cls, a: int) -> str:
        return ""

    @retry
    @staticmethod
    def static(a: int) -> int:
        return a

    @retry(attempts=2)
    async def amethod(self) -> None:
        return None


@resilience.hedged
async def hedged_bare(a: int) -> str:
    return str(a)


@resilience.hedged(delay=0.1, max_hedged_attempts=2, on=ConnectionError)
@retry(attempts=2)
async def hedged_stacked(a: int, *, b: str = "") -> list[str]:
    return [b] * a


@resilience.hedged(resilience.HedgingPolicy(delay=None))
async def hedged_policy() -> bytes:
    return b""


@resilience.deadline(2.0)
async def under_deadline(a: int) -> float:
    return float(a)


@resilience.deadline(timedelta(seconds=1))
def sync_under_deadline(a: str) -> str:
    return a


@inject_fault(ConnectionError("x"), rate=0.1, seed=1)
@inject_latency(0.5, rate=0.1)
@inject_result(None, rate=0.1, enabled=lambda: True)
async def chaotic(a: int) -> int | None:
    return a


@inject_fault(TimeoutError, rate=0.5)
def chaotic_sync(a: int) -> int:
    return a


def plain_sync(a: int) -> int:
    return a


# A sync target is refused at run time (TypeError); the type checker refuses it too (an
# unneeded ignore would itself be an error under --strict).
refused: object = resilience.hedged(delay=1.0)(plain_sync)  # type: ignore[arg-type]
refused_bare: object = resilience.hedged(plain_sync)  # type: ignore[arg-type]


async def check_v2() -> None:
    assert_type(await hedged_bare(1), str)
    assert_type(await hedged_stacked(2, b="x"), list[str])
    assert_type(await hedged_policy(), bytes)
    assert_type(await under_deadline(1), float)
    assert_type(sync_under_deadline("a"), str)
    assert_type(await chaotic(1), int | None)
    assert_type(chaotic_sync(1), int)
    assert_type(resilience.remaining(), float | None)
    with resilience.deadline(1.0) as scope:
        assert_type(scope, resilience.deadline)
    async with resilience.deadline(1.0):
        pass
    with set_enabled(False):
        pass


@bounded(limit=AdaptiveLimit(algorithm="aimd"), key="typing-adaptive")
async def adaptive_permit(a: int) -> float:
    return 1.0


@throttled
def throttled_bare(a: int) -> str:
    return str(a)


@throttled(ThrottlePolicy(k=1.5), key="typing-throttle")
async def throttled_async(a: int, *, b: str = "") -> bytes:
    return b""


@retry(attempts=3, budget=RetryQuota(key="typing-quota"))
def quota_retried(a: int) -> int:
    return a


@retry(attempts=3, budget=RetryThrottle())
async def throttle_retried() -> str:
    return ""


@rate_limited(rate=1000, per=60.0, cost=lambda text: len(text), settle=lambda used: used)
def weighted(text: str) -> int:
    return len(text)


async def check() -> None:
    assert_type(bare(1), float)
    assert_type(bare(1, b="y"), float)
    assert_type(with_fields(2), str)
    assert_type(await coroutine(1), bytes)
    assert_type(generator(3), Iterator[int])
    assert_type(async_generator(3), AsyncIterator[int])
    assert_type(Service().method(1), int)
    assert_type(Service.klass(1), str)
    assert_type(Service.klass_below(1), str)
    assert_type(Service.static(1), int)
    assert_type(await Service().amethod(), None)
    assert_type(breaker_bare(1), str)
    assert_type(await breaker_async(1), int)
    assert_type(limited(1, b="x"), bytes)
    assert_type(await permit(1), float)
    assert_type(traced_bare(1), int)
    assert_type(await traced_named(), str)
    assert_type(await stacked(1, b="x"), list[int])
    assert_type(via_stack(1), tuple[int, str])
    assert_type(parse_retry_after({"retry-after": "1"}), float | None)
    assert_type(presets.openai()(bare)(1, b="y"), float)
    assert_type(presets.anthropic(key="shared")(bare)(1), float)
    assert_type(presets.tinker_retry_handler(pool_scope="call")(bare)(1), float)
    assert_type(Backoff().delay(0), float)
    assert_type(Backoff().bounds(0), tuple[float, float])
    decorator = retry(attempts=2)
    wrapped: Callable[[int], float] = decorator(bare)
    assert_type(resilience.is_active(), bool)
    del wrapped
    assert_type(await adaptive_permit(1), float)
    assert_type(get_bounded("typing-adaptive").limit, int)
    assert_type(throttled_bare(1), str)
    assert_type(await throttled_async(1, b="x"), bytes)
    assert_type(quota_retried(1), int)
    assert_type(await throttle_retried(), str)
    assert_type(weighted("abc"), int)
    assert_type(parse_quota({"x-ratelimit-remaining": "1"}), list[Quota])
    assert_type(RetryQuota().tokens(), int)
    assert_type(RetryThrottle().tokens(), float)
