"""
``@rate_limited``: at most *rate* call starts in any window of *per* seconds.

This module is the decorator's public face: ``rate_limited()`` with its overloads and
``RateLimitFields``. The limiter's parts live beside it:

- ``state``: the algorithm (read its docstring), ``RateState``'s pure sliding-log
  accounting, the ``RateBackend`` protocol every store implements and ``MemoryRateBackend``,
  registered as ``MemoryStore``'s ``"rate"`` backend;
- ``layer``: ``RateLimitLayer``, the sync and async drivers that reserve a start, wait for
  it or refuse it, and open the key's backoff window on a server-given delay; and ``EPOCH``,
  which ``resilience.testing.reset()`` bumps so layers fetch their backends again;
- ``window``: the shared backoff windows (``backoff_window``) a Retry-After opens;
- ``redis`` and ``redis_window``: the same accounting and windows as Lua scripts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._decorating import Decorator, is_target, policy_from
from resilience._policies import RateLimitPolicy
from resilience._rate.layer import RateLimitLayer


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["RateLimitFields", "rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class RateLimitFields(TypedDict, total=False):
    """The keyword arguments ``@rate_limited(...)`` accepts: ``RateLimitPolicy``'s fields."""

    rate: int
    per: float | timedelta
    burst: int | None
    key: str | None
    wait: bool
    timeout: float | timedelta | None
    store: Any
    clock: Clock | None
    delay_hook: Callable[[Any], float | None] | None
    retry_after_cap: float | timedelta
    fail_open: bool
    cost: int | Callable[..., int]
    settle: Callable[[Any], int | None] | None
    pace_from_headers: bool


@overload
def rate_limited(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def rate_limited(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def rate_limited(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def rate_limited(
    policy: RateLimitPolicy | None = None, /, **fields: Unpack[RateLimitFields]
) -> Decorator[RateLimitPolicy]: ...
def rate_limited(policy: Any = None, /, **fields: Any) -> Any:
    """
    Let at most *rate* calls start in any window of *per* seconds; wait or refuse the rest.

    Use with a policy (``@rate_limited(RateLimitPolicy(rate=10))``) or its fields
    (``@rate_limited(rate=10, per=1.0, key="api")``). Works on sync and async functions,
    methods, classmethods and staticmethods. Limiters with the same *key* share one budget
    and one backoff window; a call that fails with a server-given delay (Retry-After)
    opens the window, and every caller of the key waits until it ends.

    Raises:
        RateLimitedError: When ``wait=False`` and there is no room now, or when the turn
            is further away than ``timeout``; ``.retry_after`` says when to come back.
        TypeError: At decoration time, for generator functions and wrong types.
        ValueError: At decoration time, for out-of-range fields, or a key already
            limited with a different rate, per or burst.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:
        msg = "@rate_limited needs a rate: use @rate_limited(rate=..., per=...)"
        raise TypeError(msg)
    return Decorator(policy_from(RateLimitPolicy, "rate_limited", policy, fields), RateLimitLayer)
