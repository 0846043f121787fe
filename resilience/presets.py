"""
Ready-made stacks that reproduce well-known clients' own retry rules.

- ``tinker()``: the Tinker Python SDK's HTTP layer (``tinker._base_client``);
- ``tinker_retry_handler()``: its ``RetryHandler`` (``tinker.lib.retry_handler``);
- ``openai()`` and ``anthropic()``: the OpenAI (3.x) and Anthropic (2.x) SDKs' HTTP layer,
  which share one shape (Stainless clients) and differ in how far they obey Retry-After.

Each is property-tested against the installed SDK's own functions (its
``_calculate_retry_timeout``, ``_should_retry``, ``_parse_retry_after_header``,
``RetryHandler._should_retry`` and ``_calculate_retry_delay``); the few differences left
are listed in ``docs/sdks.md`` with their reasons. Side by side with the SDKs' constants:

=======================================  ===================================================
SDK                                      ``resilience``
=======================================  ===================================================
``max_retries`` (tinker 10, others 2)    ``RetryPolicy(attempts=max_retries + 1)``
``INITIAL_RETRY_DELAY = 0.5``            ``Backoff(base=0.5)``
``MAX_RETRY_DELAY`` (tinker 10, else 8)  ``Backoff(max=...)``
``jitter = 1 - 0.25 * random()``         ``Backoff(jitter="factor", jitter_amount=0.25)``
retry 408, 409, 429, 5xx errors          ``on=`` / ``on_result=`` (never a 2xx or 3xx)
``x-should-retry: true/false``           the same predicates, which obey it first
timeouts and connection errors           ``on=http.is_retryable_error`` (the whole chain)
Retry-After (tinker: ``0 < x <= 60``;    the delay hook, with the SDK's own parsing
openai: ``<= 120``, more is refused;     (``retry-after-ms`` first, then ``float()``, then
anthropic: any ``x > 0``)                an e-mail date)
``max_connections = 1000``               ``BoundedPolicy(limit=1000)``, one pool per preset
RetryHandler: no attempt limit           ``RetryPolicy(attempts=None)``
RetryHandler: ``progress_timeout=7200``  ``progress_timeout`` and, for async, a watchdog
RetryHandler: jitter ``±25%``            ``Backoff(jitter="range", jitter_amount=0.25)``
=======================================  ===================================================

Tell the SDK not to retry itself (``max_retries=0``) when a preset retries for it, or the
two loops multiply.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import itertools
import math
import sys

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, overload

from resilience import http
from resilience._backoff import Backoff
from resilience._clock import resolve
from resilience._compose import Stack
from resilience._policies import BoundedPolicy, RetryPolicy
from resilience._retry_after import _lower_headers


__all__ = [
    "NoProgressError",
    "RetryHandlerStack",
    "anthropic",
    "openai",
    "stainless_retry_after",
    "tinker",
    "tinker_delay",
    "tinker_retry_handler",
]

TINKER_MAX_RETRIES = 10
TINKER_MAX_CONNECTIONS = 1000
TINKER_PROGRESS_TIMEOUT = 120 * 60.0
STAINLESS_MAX_RETRIES = 2
STAINLESS_MAX_CONNECTIONS = 1000
OPENAI_MAX_RETRY_AFTER = 120.0
ANTHROPIC_MAX_SLEEP = 4_294_967.0  # the SDK's bound on time.sleep's argument

F = TypeVar("F")

_pool_numbers = itertools.count(1)


def _pool(name: str, limit: int | None, key: str | None) -> BoundedPolicy | None:
    """One pool per preset call (so unrelated clients never share one) unless *key* is set."""
    if limit is None:
        return None
    return BoundedPolicy(limit=limit, key=key or f"{name}#{next(_pool_numbers)}")


# -- the SDKs' Retry-After parsing ----------------------------------------------------------


def _header(headers: object, name: str) -> str | None:
    """``headers.get(name)`` as the SDK reads it (httpx joins repeated headers with ', ')."""
    if callable(getattr(headers, "multi_items", None)):
        value = headers.get(name)  # type: ignore[attr-defined]
        return value if isinstance(value, str) else None
    return _lower_headers(headers, (name,)).get(name)


def stainless_retry_after(
    headers: object, *, flavour: Literal["tinker", "anthropic", "openai"] = "anthropic"
) -> float | None:
    """
    A server delay in seconds read as the SDKs' ``_parse_retry_after_header`` reads it.

    ``retry-after-ms`` wins as soon as ``float()`` takes it (even when negative), then
    ``retry-after`` as a number, then as an e-mail date (relative to the current clock, so
    virtual time moves it). Unlike ``parse_retry_after`` the result may be negative, NaN or
    infinite; the presets' rules decide what to do with those, as the SDKs do. With
    ``flavour="openai"`` a number too large for a float gives 121 s (refused), as there.

    .. versionadded:: 0.1.0
    """
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = _header(headers, name)
        if value is None:
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        if (
            flavour == "openai"
            and delay == math.inf
            and value.strip().lower() not in ("inf", "+inf", "infinity", "+infinity")
        ):
            return OPENAI_MAX_RETRY_AFTER + 1.0
        return delay / divisor
    text = _header(headers, "retry-after")
    if text is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(text)
        if parsed is None:
            return None
        when = email.utils.mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return float(when - _now())


def _now() -> float:
    clock: Any = resolve(None)
    now: float = clock.time()
    return now


def _outcome_headers(outcome: object) -> object:
    """The response headers behind an outcome: a response, or an SDK status error."""
    if isinstance(outcome, BaseException):
        for link in http.causes(outcome):
            if http.status_of(link) is not None:
                return http._headers_of(link)
        return None
    return http._headers_of(outcome)


# -- tinker ---------------------------------------------------------------------------------


def tinker_delay(outcome: object) -> float | None:
    """
    The Tinker SDK's rule for server delays: Retry-After is obeyed only when ``0 < x <= 60``.

    Outside that window (0, negative, over a minute, unparseable) the backoff applies.
    """
    delay = stainless_retry_after(_outcome_headers(outcome), flavour="tinker")
    if delay is None or not 0 < delay <= 60:
        return None
    return delay


def _error_response(outcome: object) -> bool:
    """``on_result``: a returned 4xx/5xx response the SDK would retry (never a 2xx/3xx)."""
    status = http.status_of(outcome)
    return status is not None and status >= 400 and http.is_retryable_response(outcome)


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
        key: The pool key, so several clients share one connection budget on purpose
            (None: a pool of this stack's own).
    """
    retry = RetryPolicy(
        attempts=_attempts(max_retries),
        backoff=Backoff(base=0.5, max=10.0, jitter="factor", jitter_amount=0.25),
        on=http.is_retryable_error,
        on_result=_error_response,
        delay_hook=tinker_delay,
        retry_after_cap=60.0,
        name="tinker",
    )
    return Stack(retry=retry, bounded=_pool("tinker", max_connections, key))


def _attempts(max_retries: int) -> int:
    if type(max_retries) is not int or max_retries < 0:
        msg = f"max_retries must be a whole number >= 0, got {max_retries!r}"
        raise ValueError(msg)
    return max_retries + 1


# -- openai and anthropic -------------------------------------------------------------------


def _openai_refused(outcome: object) -> bool:
    """OpenAI does not retry when the server asks for more than two minutes."""
    delay = stainless_retry_after(_outcome_headers(outcome), flavour="openai")
    return delay is not None and math.isfinite(delay) and delay > OPENAI_MAX_RETRY_AFTER


def _openai_error(exc: BaseException) -> bool:
    return http.is_retryable_error(exc) and not _openai_refused(exc)


def _openai_response(response: object) -> bool:
    return _error_response(response) and not _openai_refused(response)


def _openai_delay(outcome: object) -> float | None:
    delay = stainless_retry_after(_outcome_headers(outcome), flavour="openai")
    if delay is not None and math.isfinite(delay) and 0 < delay <= OPENAI_MAX_RETRY_AFTER:
        return delay
    return None


def _anthropic_delay(outcome: object) -> float | None:
    delay = stainless_retry_after(_outcome_headers(outcome), flavour="anthropic")
    if delay is not None and delay > 0:
        return min(delay, ANTHROPIC_MAX_SLEEP)
    return None


def openai(
    *,
    max_retries: int = STAINLESS_MAX_RETRIES,
    max_connections: int | None = STAINLESS_MAX_CONNECTIONS,
    key: str | None = None,
) -> Stack:
    """
    The OpenAI SDK's HTTP retry layer: 2 retries, 0.5 s doubling to 8 s, jitter in (0.75, 1].

    408, 409, 429 and 5xx errors, timeouts and connection errors are retried;
    ``x-should-retry`` is obeyed first; a Retry-After (or ``retry-after-ms``) in
    ``(0, 120]`` seconds is the exact wait, and a longer one stops the retries.

    Args:
        max_retries: Retries after the first call (the SDK's ``max_retries``).
        max_connections: Requests in flight at once (None: no limit).
        key: The pool key, to share one budget on purpose (None: a pool of its own).
    """
    retry = RetryPolicy(
        attempts=_attempts(max_retries),
        backoff=Backoff(base=0.5, max=8.0, jitter="factor", jitter_amount=0.25),
        on=_openai_error,
        on_result=_openai_response,
        delay_hook=_openai_delay,
        retry_after_cap=OPENAI_MAX_RETRY_AFTER,
        name="openai",
    )
    return Stack(retry=retry, bounded=_pool("openai", max_connections, key))


def anthropic(
    *,
    max_retries: int = STAINLESS_MAX_RETRIES,
    max_connections: int | None = STAINLESS_MAX_CONNECTIONS,
    key: str | None = None,
) -> Stack:
    """
    The Anthropic SDK's HTTP retry layer: as ``openai()``, but any positive Retry-After wins.

    408, 409, 429 and 5xx (529 "overloaded" included) errors, timeouts and connection
    errors are retried; ``x-should-retry`` is obeyed first; a positive Retry-After (or
    ``retry-after-ms``) is the exact wait, however long (as the SDK does).

    Args:
        max_retries: Retries after the first call (the SDK's ``max_retries``).
        max_connections: Requests in flight at once (None: no limit).
        key: The pool key, to share one budget on purpose (None: a pool of its own).
    """
    retry = RetryPolicy(
        attempts=_attempts(max_retries),
        backoff=Backoff(base=0.5, max=8.0, jitter="factor", jitter_amount=0.25),
        on=http.is_retryable_error,
        on_result=_error_response,
        delay_hook=_anthropic_delay,
        retry_after_cap=ANTHROPIC_MAX_SLEEP,
        name="anthropic",
    )
    return Stack(retry=retry, bounded=_pool("anthropic", max_connections, key))


# -- tinker's RetryHandler ------------------------------------------------------------------

_HANDLER_ERRORS = frozenset({"APIConnectionError", "RetryableException"})


def _retry_handler_rule(exc: BaseException) -> bool:
    """``RetryHandler._should_retry``: its exception types, or a retryable status error."""
    if not isinstance(exc, Exception):
        return False
    names = {klass.__name__ for klass in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or names & _HANDLER_ERRORS:
        return True
    httpx = sys.modules.get("httpx")  # the SDK's transport; httpx2 is not in its list
    if httpx is not None and isinstance(exc, httpx.TimeoutException):
        return True
    if "APIStatusError" in names:
        status = getattr(exc, "status_code", None)
        return isinstance(status, int) and (status in (408, 409, 429) or 500 <= status < 600)
    return False


class NoProgressError(TimeoutError):
    """
    Raised by ``tinker_retry_handler()``'s watchdog when a call made no progress in time.

    .. versionadded:: 0.1.0
    """

    def __init__(self, progress_timeout: float) -> None:
        super().__init__(f"No progress made in {progress_timeout:g}s. Requests appear to be stuck.")
        self.progress_timeout = progress_timeout


@dataclass(frozen=True, slots=True)
class RetryHandlerStack(Stack):
    """
    ``tinker_retry_handler()``'s stack: a ``Stack`` with the RetryHandler's two extras.

    Args:
        pool_scope: ``"attempt"`` holds the connection permit only while an attempt runs
            (our recommendation: waits give it back); ``"call"`` holds it for the whole
            retry loop, as the SDK's semaphore does.
        watchdog: For async functions and methods, cancel a call when no call of the
            decorated function has succeeded for the retry's ``progress_timeout``, raising
            ``NoProgressError`` (the SDK raises its ``APIConnectionError`` with the same
            message). Classmethods and staticmethods get the stack alone.

    .. versionadded:: 0.1.0
    """

    pool_scope: Literal["attempt", "call"] = "attempt"
    watchdog: bool = True

    def __post_init__(self) -> None:
        Stack.__post_init__(self)
        if self.pool_scope not in ("attempt", "call"):
            msg = f"pool_scope must be 'attempt' or 'call', got {self.pool_scope!r}"
            raise ValueError(msg)

    @overload
    def __call__(self, target: classmethod[Any, Any, Any]) -> classmethod[Any, Any, Any]: ...
    @overload
    def __call__(self, target: staticmethod[Any, Any]) -> staticmethod[Any, Any]: ...
    @overload
    def __call__(self, target: F) -> F: ...
    def __call__(self, target: Any) -> Any:
        """Decorate *target*: the stack, the pool around the loop if asked, the watchdog."""
        from resilience import bounded  # noqa: PLC0415 - the package imports this module

        if self.pool_scope == "call" and self.bounded is not None:
            inner = Stack.__call__(replace(self, bounded=None, pool_scope="attempt"), target)
            decorated = bounded(self.bounded)(inner)
        else:
            decorated = Stack.__call__(self, target)
        timeout = self.retry.progress_timeout if self.retry is not None else None
        if (
            not self.watchdog
            or timeout is None
            or isinstance(decorated, classmethod | staticmethod)  # watched as plain functions only
            or not inspect.iscoroutinefunction(decorated)
        ):
            return decorated
        return _watched(decorated, float(timeout))  # type: ignore[arg-type]


class _Progress:
    """The last success of any call of one decorated function, and the calls in its loop."""

    __slots__ = ("calls", "last")

    def __init__(self) -> None:
        self.last = 0.0
        self.calls = 0


def _watched(decorated: Callable[..., Any], timeout: float) -> Callable[..., Any]:
    """*decorated*, cancelled (``NoProgressError``) when no call succeeds for *timeout*."""
    progress = _Progress()

    @functools.wraps(decorated)
    async def watched(*args: Any, **kwargs: Any) -> Any:
        clock: Any = resolve(None)
        if progress.calls == 0:
            progress.last = clock.monotonic()
        progress.calls += 1
        call = asyncio.ensure_future(decorated(*args, **kwargs))
        try:
            while not call.done():
                left = progress.last + timeout - clock.monotonic()
                if left <= 0:
                    call.cancel()
                    await asyncio.gather(call, return_exceptions=True)
                    raise NoProgressError(timeout)
                nap = asyncio.ensure_future(clock.asleep(left))
                try:
                    await asyncio.wait({call, nap}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    nap.cancel()
            result = call.result()
            progress.last = clock.monotonic()
            return result
        except asyncio.CancelledError:
            call.cancel()
            raise
        finally:
            progress.calls -= 1

    setattr(watched, "_self_parent", decorated)  # noqa: B010 - layers_of() looks behind it
    return watched


def tinker_retry_handler(
    *,
    progress_timeout: float = TINKER_PROGRESS_TIMEOUT,
    max_connections: int | None = TINKER_MAX_CONNECTIONS,
    key: str | None = None,
    pool_scope: Literal["attempt", "call"] = "attempt",
    watchdog: bool = True,
) -> RetryHandlerStack:
    """
    The SDK's ``RetryHandler``: retry forever while anything makes progress.

    Retryable failures (``RetryHandler._should_retry``: tinker's ``APIConnectionError`` and
    ``APITimeoutError``, ``RetryableException``, timeouts, and status errors 408, 409, 429,
    500-599) are retried with a ±25% jittered exponential backoff until no call of the
    decorated function has succeeded for *progress_timeout* seconds. Retry-After is not
    read, as in the SDK.

    Args:
        progress_timeout: Seconds without any success before giving up.
        max_connections: Calls in flight at once (None: no limit).
        key: The pool key, to share one budget on purpose (None: a pool of its own).
        pool_scope: ``"attempt"`` (default) or ``"call"`` (the SDK's semaphore scope).
        watchdog: Cancel a hung async call past *progress_timeout* (as the SDK does).
    """
    retry = RetryPolicy(
        attempts=None,
        progress_timeout=progress_timeout,
        backoff=Backoff(base=0.5, max=10.0, jitter="range", jitter_amount=0.25),
        on=_retry_handler_rule,
        delay_hook=None,
        name="tinker.retry_handler",
    )
    return RetryHandlerStack(
        retry=retry,
        bounded=_pool("tinker", max_connections, key),
        pool_scope=pool_scope,
        watchdog=watchdog,
    )
