"""
Ready-made stacks that reproduce well-known clients' behaviour.

``tinker()`` is the Tinker Python SDK's HTTP layer, ``tinker_retry_handler()`` its
``RetryHandler`` (seed notes §1A and §1B), side by side with the SDK's constants:

=======================================  ===================================================
Tinker SDK                               ``resilience``
=======================================  ===================================================
``DEFAULT_MAX_RETRIES = 10``             ``RetryPolicy(attempts=11)`` (one call + 10 retries)
``INITIAL_RETRY_DELAY = 0.5``            ``Backoff(base=0.5)``
``MAX_RETRY_DELAY = 10.0``               ``Backoff(max=10.0)``
``jitter = 1 - 0.25 * random()``         ``Backoff(jitter="factor", jitter_amount=0.25)``
retry 408, 409, 429, 5xx                 ``on_result=http.is_retryable_response``
``x-should-retry: true/false``           the same predicates, which obey it first
timeouts and connection errors           ``on=http.is_retryable_error``
Retry-After used when ``0 < x <= 60``    ``delay_hook=tinker_delay`` (else the backoff)
``max_connections = 1000``               ``BoundedPolicy(limit=1000)``
RetryHandler: no attempt limit           ``RetryPolicy(attempts=None)``
RetryHandler: ``progress_timeout=7200``  ``RetryPolicy(progress_timeout=7200)``
RetryHandler: jitter ``±25%``            ``Backoff(jitter="range", jitter_amount=0.25)``
=======================================  ===================================================

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from resilience import http
from resilience._backoff import Backoff
from resilience._compose import Stack
from resilience._policies import BoundedPolicy, RetryPolicy


__all__ = ["tinker", "tinker_delay", "tinker_retry_handler"]

TINKER_MAX_RETRIES = 10
TINKER_MAX_CONNECTIONS = 1000
TINKER_PROGRESS_TIMEOUT = 120 * 60.0


def tinker_delay(outcome: object) -> float | None:
    """
    The SDK's rule for server delays: Retry-After is obeyed only when ``0 < x <= 60``.

    Outside that window (0, negative, over a minute, unparseable) the backoff applies.
    """
    delay = http.server_delay(outcome)
    if delay is None or not 0 < delay <= 60:
        return None
    return delay


def tinker(
    *,
    max_retries: int = TINKER_MAX_RETRIES,
    max_connections: int | None = TINKER_MAX_CONNECTIONS,
    key: str | None = None,
) -> Stack:
    """
    The Tinker SDK's HTTP retry layer as a stack: its schedule, status and header rules.

    Args:
        max_retries: Retries after the first call (the SDK's ``max_retries``).
        max_connections: Requests in flight at once (None: no limit).
        key: The pool key, so several clients share one connection budget.
    """
    retry = RetryPolicy(
        attempts=max_retries + 1,
        backoff=Backoff(base=0.5, max=10.0, jitter="factor", jitter_amount=0.25),
        on=http.is_retryable_error,
        on_result=http.is_retryable_response,
        delay_hook=tinker_delay,
        retry_after_cap=60.0,
        name="tinker",
    )
    pool = (
        None
        if max_connections is None
        else BoundedPolicy(limit=max_connections, key=key or "tinker")
    )
    return Stack(retry=retry, bounded=pool)


def tinker_retry_handler(
    *,
    progress_timeout: float = TINKER_PROGRESS_TIMEOUT,
    max_connections: int | None = TINKER_MAX_CONNECTIONS,
    key: str | None = None,
) -> Stack:
    """
    The SDK's ``RetryHandler``: retry forever while anything makes progress.

    Retryable failures are retried with a ±25% jittered exponential backoff until no call of
    the decorated function has succeeded for *progress_timeout* seconds.
    """
    retry = RetryPolicy(
        attempts=None,
        progress_timeout=progress_timeout,
        backoff=Backoff(base=0.5, max=10.0, jitter="range", jitter_amount=0.25),
        on=http.is_retryable_error,
        delay_hook=None,
        name="tinker.retry_handler",
    )
    pool = (
        None
        if max_connections is None
        else BoundedPolicy(limit=max_connections, key=key or "tinker")
    )
    return Stack(retry=retry, bounded=pool)
