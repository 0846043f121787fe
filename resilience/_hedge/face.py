"""
``@hedged``: start another attempt beside a slow one; the first unhandled outcome wins.

The race and its driver live in ``_hedge.layer``; the policy in ``_hedge.policy``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._decorating import apply, is_target, policy_from
from resilience._hedge.layer import HedgeLayer
from resilience._hedge.policy import HedgingPolicy


if TYPE_CHECKING:
    from resilience.typing import Clock, ExceptionFilter


__all__ = ["HedgedDecorator", "HedgedFields", "hedged"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class HedgedFields(TypedDict, total=False):
    """The keyword arguments ``@hedged(...)`` accepts: ``HedgingPolicy``'s fields."""

    max_hedged_attempts: int
    delay: float | timedelta | None
    on: ExceptionFilter
    on_result: Callable[[Any], bool] | None
    budget: Any
    name: str | None
    clock: Clock | None


class HedgedDecorator:
    """
    What ``@hedged(...)`` returns: applies a fresh ``HedgeLayer`` to each coroutine function.

    Typed for coroutine functions only, so a type checker flags a sync target as the
    decorator does at run time.
    """

    __slots__ = ("policy",)

    def __init__(self, policy: HedgingPolicy) -> None:
        self.policy = policy

    @overload
    def __call__(
        self, target: classmethod[T, P, Coroutine[Any, Any, R]]
    ) -> classmethod[T, P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(
        self, target: staticmethod[P, Coroutine[Any, Any, R]]
    ) -> staticmethod[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(
        self, target: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __call__(self, target: Any) -> Any:
        """Decorate *target* (a coroutine function)."""
        return apply(HedgeLayer(self.policy), target)

    def __repr__(self) -> str:
        return f"<decorator {self.policy!r}>"


@overload
def hedged(
    func: classmethod[T, P, Coroutine[Any, Any, R]], /
) -> classmethod[T, P, Coroutine[Any, Any, R]]: ...
@overload
def hedged(
    func: staticmethod[P, Coroutine[Any, Any, R]], /
) -> staticmethod[P, Coroutine[Any, Any, R]]: ...
@overload
def hedged(func: Callable[P, Coroutine[Any, Any, R]], /) -> Callable[P, Coroutine[Any, Any, R]]: ...
@overload
def hedged(
    policy: HedgingPolicy | None = None, /, **fields: Unpack[HedgedFields]
) -> HedgedDecorator: ...
def hedged(policy: Any = None, /, **fields: Any) -> Any:
    """
    Hedge an async callable: when an attempt is slow, start another beside it.

    Use bare (``@hedged``), with a policy (``@hedged(HedgingPolicy(delay=0.2))``) or with
    the policy's fields (``@hedged(delay=0.2, max_hedged_attempts=2)``). The first
    unhandled outcome (a result, or an exception not matching *on*) wins and is returned or
    raised; every other attempt is cancelled, and the call returns only once they have
    finished. When every attempt ends handled, the primary's outcome is the call's.
    Cancelling the caller cancels every attempt.

    Args:
        policy: A ``HedgingPolicy``; keyword *fields* build one, or amend the one given.

    Raises:
        TypeError: At decoration time for a sync (or generator) callable: a losing attempt
            must be cancelled, which only a coroutine allows.
        ValueError: At decoration time, for out-of-range fields (a negative *delay*).

    .. versionadded:: 0.2.0
    """
    if is_target(policy) and not fields:  # bare @hedged
        return apply(HedgeLayer(HedgingPolicy()), policy)
    return HedgedDecorator(policy_from(HedgingPolicy, "hedged", policy, fields))
