"""
``@throttled``: Google SRE's client-side adaptive throttling, for sync and async callables.

The public face: ``throttled()`` with its overloads and ``ThrottleFields``. The counts and
the policy live in ``_throttle.state`` (with the Redis twin in ``_throttle.redis``); the
layer that draws and counts is ``_throttle.layer``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._decorating import Decorator, is_target, policy_from
from resilience._throttle.layer import ThrottleLayer
from resilience._throttle.state import ThrottlePolicy


if TYPE_CHECKING:
    from resilience.typing import Clock, ExceptionFilter


__all__ = ["ThrottleFields", "throttled"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class ThrottleFields(TypedDict, total=False):
    """The keyword arguments ``@throttled(...)`` accepts: ``ThrottlePolicy``'s fields."""

    k: float
    window: float | timedelta
    on: ExceptionFilter
    key: str | None
    store: Any
    rand: Callable[[], float] | None
    clock: Clock | None


@overload
def throttled(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def throttled(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def throttled(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def throttled(
    policy: ThrottlePolicy | None = None, /, **fields: Unpack[ThrottleFields]
) -> Decorator[ThrottlePolicy]: ...
def throttled(policy: Any = None, /, **fields: Any) -> Any:
    """
    Refuse calls locally while the upstream refuses many: Google SRE adaptive throttling.

    Over the last *window* seconds it counts requests (every call, refused ones included)
    and accepts (calls that did not raise an exception matching *on*), and refuses a call
    before calling with probability ``max(0, (requests - k * accepts) / (requests + 1))``.
    Use bare (``@throttled``), with a policy, or with its fields (``@throttled(k=2.0,
    key="api")``). Throttles with the same *key* share their counts.

    Raises:
        ThrottledError: When the call is refused locally.
        TypeError: At decoration time, for generator functions and wrong types.
        ValueError: At decoration time, for out-of-range fields.

    .. versionadded:: 0.2.0
    """
    if is_target(policy) and not fields:
        return Decorator(ThrottlePolicy(), ThrottleLayer)(policy)
    return Decorator(policy_from(ThrottlePolicy, "throttled", policy, fields), ThrottleLayer)
