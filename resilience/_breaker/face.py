"""
``@circuit_breaker``: stop calling a dependency that keeps failing, and probe it for recovery.

This module is the decorator's public face: ``circuit_breaker()`` with its overloads and
``CircuitBreakerFields``. The breaker's parts live beside it:

- ``contract``: the ``BreakerBackend`` protocol every store implements, the values that
  cross it (``BreakerConfig``, ``Admission``, ``Transition``, ``CircuitBreakerStats``) and
  the state and outcome codes;
- ``memory``: ``MemoryBreaker``, the state machine in this process's memory, and the
  failure-rate windows ``CountWindow`` and ``TimeWindow``;
- ``redis``: ``RedisBreaker``, the same state machine as Lua scripts;
- ``registry``: the backend each store makes for a name, ``CircuitBreaker`` (the handle)
  and ``get_circuit_breaker()``;
- ``layer``: ``BreakerLayer``, the sync, async and generator drivers that feed each call's
  outcome to the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._breaker.layer import BreakerLayer
from resilience._decorating import Decorator, apply, is_target, policy_from
from resilience._policies import CircuitBreakerPolicy


if TYPE_CHECKING:
    from resilience.typing import Clock, ExceptionFilter


__all__ = ["CircuitBreakerFields", "circuit_breaker"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class CircuitBreakerFields(TypedDict, total=False):
    """The keyword arguments ``@circuit_breaker(...)`` accepts: the policy's fields."""

    name: str | None
    failure_threshold: int
    reset_timeout: float | timedelta
    half_open_max_calls: int
    on: ExceptionFilter
    store: Any
    clock: Clock | None
    on_result: Callable[[Any], bool] | None
    fallback: Any
    failure_rate: float | None
    window_size: int | None
    window_duration: float | timedelta | None
    minimum_calls: int
    fail_open: bool


@overload
def circuit_breaker(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def circuit_breaker(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def circuit_breaker(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def circuit_breaker(
    policy: CircuitBreakerPolicy | None = None, /, **fields: Unpack[CircuitBreakerFields]
) -> Decorator[CircuitBreakerPolicy]: ...
def circuit_breaker(policy: Any = None, /, **fields: Any) -> Any:
    """
    Stop calling a failing dependency for a while, then probe it before trusting it again.

    Closed, calls pass and ``failure_threshold`` failures in a row (or, with
    ``failure_rate``, too high a share of failures in the window) open the breaker. Open,
    calls raise ``CircuitOpenError`` at once (or get the ``fallback``). After
    ``reset_timeout`` it is half-open: up to ``half_open_max_calls`` probe calls run at
    once; a probe's success closes it, a probe's failure opens it again.

    Use bare (``@circuit_breaker``), with a policy, or with the policy's fields. Breakers
    with the same ``name`` share one state; ``get_circuit_breaker(name)`` returns it.

    Args:
        policy: A ``CircuitBreakerPolicy``; keyword *fields* build one, or amend the one given.

    Raises:
        TypeError: At decoration time, for arguments of the wrong type, ``on_result`` or
            ``fallback`` on a generator function, or an async fallback on a sync function.
        ValueError: At decoration time, for out-of-range fields, or a name already declared
            with different numbers.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:  # bare @circuit_breaker
        return apply(BreakerLayer(CircuitBreakerPolicy()), policy)
    return Decorator(
        policy_from(CircuitBreakerPolicy, "circuit_breaker", policy, fields), BreakerLayer
    )
