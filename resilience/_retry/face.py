"""
``@retry``: call again on failure, waiting by a ``Backoff`` or by what the server says.

This module is the decorator's public face: ``retry()`` with its overloads and
``RetryFields``. The retry loop lives beside it:

- ``core``: ``RetryCall``, the decisions of one call's loop (no I/O, no sleeping, no
  clock), ``Rules``, the policy's constants they read, and ``LastSuccess``, when a
  decorated function last succeeded;
- ``layer``: ``RetryLayer`` and its sync and async drivers;
- ``generators``: the generator and async-generator drivers and their pumps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._decorating import Decorator, apply, is_target, policy_from
from resilience._policies import RetryPolicy
from resilience._retry.layer import RetryLayer


if TYPE_CHECKING:
    from resilience._backoff import Backoff
    from resilience._budget.quota import RetryQuota, RetryThrottle
    from resilience._budget.state import RetryBudget
    from resilience.typing import Clock, ExceptionFilter


__all__ = ["RetryFields", "retry"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class RetryFields(TypedDict, total=False):
    """The keyword arguments ``@retry(...)`` accepts: ``RetryPolicy``'s fields."""

    attempts: int | None
    timeout: float | timedelta | None
    progress_timeout: float | timedelta | None
    backoff: Backoff
    on: ExceptionFilter
    on_result: Callable[[Any], bool] | None
    delay_hook: Callable[[Any], float | None] | None
    retry_after_cap: float | timedelta
    attempt_timeout: float | timedelta | None
    name: str | None
    clock: Clock | None
    fallback: Any
    budget: RetryBudget | RetryQuota | RetryThrottle | None


@overload
def retry(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def retry(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def retry(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def retry(
    policy: RetryPolicy | None = None, /, **fields: Unpack[RetryFields]
) -> Decorator[RetryPolicy]: ...
def retry(policy: Any = None, /, **fields: Any) -> Any:
    """
    Retry a callable on failure, waiting between attempts.

    Use bare (``@retry``), with a policy (``@retry(RetryPolicy(attempts=3))``) or with the
    policy's fields (``@retry(attempts=3)``). Works on sync and async functions, generator
    functions, methods, classmethods and staticmethods.

    On giving up, the last exception itself is re-raised (with a note saying how many
    attempts over how long), or, when retrying on results, the last result is returned.

    Args:
        policy: A ``RetryPolicy``; keyword *fields* build one, or amend the one given.

    Raises:
        TypeError: At decoration time, for ``attempt_timeout`` on a sync callable and for
            arguments of the wrong type.
        ValueError: At decoration time, for out-of-range fields.

    .. versionadded:: 0.1.0
    """
    if is_target(policy) and not fields:  # bare @retry
        return apply(RetryLayer(RetryPolicy()), policy)
    return Decorator(policy_from(RetryPolicy, "retry", policy, fields), RetryLayer)
