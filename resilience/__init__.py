"""
Decorators that make any sync or async callable resilient.

``@retry``, ``@circuit_breaker``, ``@rate_limited``, ``@bounded`` and ``@traced`` each work
alone and stack in any order; they read frozen policy dataclasses.
"""

from __future__ import annotations

from resilience import _exports
from resilience._backoff import Backoff
from resilience._bounded.adaptive import AdaptiveLimit
from resilience._bounded.face import BoundedPool, bounded, get_bounded
from resilience._breaker.contract import CircuitBreakerStats
from resilience._breaker.face import circuit_breaker
from resilience._breaker.registry import CircuitBreaker, get_circuit_breaker
from resilience._budget.quota import RetryQuota, RetryThrottle
from resilience._budget.state import RetryBudget
from resilience._clock import SystemClock
from resilience._compose import Stack, exempt, resilient
from resilience._config import is_active, set_active
from resilience._deadline import deadline, remaining
from resilience._decorating import layers_of
from resilience._errors import (
    AttemptTimeoutError,
    BoundedTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
    RateLimitedError,
    ResilienceError,
    StoreUnavailableError,
    ThrottledError,
)
from resilience._hedge.face import hedged
from resilience._hedge.policy import HedgingPolicy
from resilience._policies import BoundedPolicy, CircuitBreakerPolicy, RateLimitPolicy, RetryPolicy
from resilience._rate.face import rate_limited
from resilience._rate.window import BackoffWindow, backoff_window
from resilience._retry.face import retry
from resilience._retry_after import parse_retry_after, retry_after_from
from resilience._snapshot import (
    BreakerSnapshot,
    BudgetSnapshot,
    LimiterSnapshot,
    PoolSnapshot,
    Snapshot,
    ThrottleSnapshot,
    snapshot,
)
from resilience._throttle.face import throttled
from resilience._throttle.state import ThrottlePolicy
from resilience._traced import TracedPolicy, traced


__all__ = [
    "AdaptiveLimit",
    "AttemptTimeoutError",
    "Backoff",
    "BackoffWindow",
    "BoundedPolicy",
    "BoundedPool",
    "BoundedTimeoutError",
    "BreakerSnapshot",
    "BudgetSnapshot",
    "CircuitBreaker",
    "CircuitBreakerPolicy",
    "CircuitBreakerStats",
    "CircuitOpenError",
    "DeadlineExceededError",
    "HedgingPolicy",
    "LimiterSnapshot",
    "PoolSnapshot",
    "RateLimitPolicy",
    "RateLimitedError",
    "ResilienceError",
    "RetryBudget",
    "RetryPolicy",
    "RetryQuota",
    "RetryThrottle",
    "Snapshot",
    "Stack",
    "StoreUnavailableError",
    "SystemClock",
    "ThrottlePolicy",
    "ThrottleSnapshot",
    "ThrottledError",
    "TracedPolicy",
    "backoff_window",
    "bounded",
    "circuit_breaker",
    "deadline",
    "exempt",
    "get_bounded",
    "get_circuit_breaker",
    "hedged",
    "is_active",
    "layers_of",
    "parse_retry_after",
    "rate_limited",
    "remaining",
    "resilient",
    "retry",
    "retry_after_from",
    "set_active",
    "snapshot",
    "throttled",
    "traced",
]

_exports.publish(__name__, globals())


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked for

        return version("resilience")
    msg = f"module 'resilience' has no attribute {name!r}"
    raise AttributeError(msg)
