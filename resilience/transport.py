"""
Resilient httpx transports: one stack of our policies applied to every request of a client.

    import httpx
    from resilience.transport import ResilientTransport

    client = httpx.Client(transport=ResilientTransport())      # the Tinker SDK's rules
    async_client = httpx.AsyncClient(transport=AsyncResilientTransport())

Each request goes through the stack (by default ``resilience.presets.tinker()``), built once
per origin (scheme, host and port), so every upstream gets its own circuit breaker and rate
budget when the stack's policies leave names and keys unset. A response carrying a server
delay (a 429 or 503 with Retry-After) opens the shared backoff window of its key, the origin
plus a digest of the API key (as Tinkex keys its limiter): every request of every client with
that key waits the window out before it is sent. Error responses are read in full before a
retry, so their connections go back to the pool and the last one can still be inspected.

Needs httpx (``pip install 'resilience[http]'``). The same transports for ``httpx2`` (which
current OpenAI and Anthropic SDKs are built on) are in ``resilience.transport_httpx2``.
"""

from __future__ import annotations

import hashlib
import threading

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx

from resilience import _deadline
from resilience._compose import Stack, _as_stack
from resilience._errors import RateLimitedError
from resilience._rate.window import BackoffWindow, backoff_window
from resilience.http import server_delay
from resilience.presets import tinker


__all__ = ["AsyncResilientTransport", "ResilientTransport", "window_key"]

_KEY_HEADERS = ("authorization", "x-api-key", "api-key")


def window_key(url: Any, headers: Mapping[str, str] | None = None) -> str:
    """
    The backoff-window key of a request: its origin plus a digest of its API key.

    The origin is lower-cased and drops default ports, so ``https://API.example.com:443/v1``
    and ``https://api.example.com`` share one window. The API key (``Authorization``,
    ``X-API-Key`` or ``Api-Key``) is never kept in the key, only a short SHA-256 digest.
    *url* is an ``httpx.URL`` or ``httpx2.URL`` (anything with ``scheme``, ``host``, ``port``).
    """
    origin = _origin(url)
    secret = None
    if headers is not None:
        lowered = {name.lower(): value for name, value in headers.items()}
        secret = next((lowered[name] for name in _KEY_HEADERS if name in lowered), None)
    if not secret:
        return origin
    digest = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{origin}#{digest}"


def _origin(url: Any) -> str:
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = "" if url.port in (None, default) else f":{url.port}"
    return f"{url.scheme}://{url.host.lower()}{port}"


def _within_deadline(request: Any, header: str | None, style: str) -> None:
    """Clip the request's timeouts to ``remaining()``; name the time left in *header*."""
    left = _deadline.remaining()
    if left is None:
        return
    scope = _deadline.current()
    if left <= 0.0 and scope is not None:
        raise scope.error(str(request.url), detail="the request was not sent")
    timeouts = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        phase: left if value is None or value > left else value
        for phase, value in {
            "connect": None,
            "read": None,
            "write": None,
            "pool": None,
            **timeouts,
        }.items()
    }
    if header is not None:
        request.headers[header] = _deadline.format_timeout(left, style)


def _window_within_deadline(window: BackoffWindow) -> None:
    """A backoff window that outlasts the deadline: refuse at once instead of waiting."""
    left = _deadline.remaining()
    wait = window.remaining()
    if left is not None and wait >= left:
        scope = _deadline.current()
        reason = f"the backoff window outlasts {scope.describe()}" if scope is not None else ""
        raise RateLimitedError(window.key, wait, reason=reason)


def _style(header: str | None, style: str | None) -> str:
    if style is None:
        return "grpc" if header is not None and header.lower() == "grpc-timeout" else "seconds"
    if style not in ("grpc", "seconds"):
        msg = f"deadline_format must be 'grpc' or 'seconds', got {style!r}"
        raise ValueError(msg)
    return style


def _named(stack: Stack, origin: str) -> Stack:
    """The stack with unset breaker names and limiter/pool keys taken from *origin*."""
    changes: dict[str, Any] = {}
    if stack.circuit_breaker is not None and stack.circuit_breaker.name is None:
        changes["circuit_breaker"] = replace(stack.circuit_breaker, name=f"http {origin}")
    if stack.rate_limited is not None and stack.rate_limited.key is None:
        changes["rate_limited"] = replace(stack.rate_limited, key=f"http {origin}")
    if stack.bounded is not None and stack.bounded.key is None:
        changes["bounded"] = replace(stack.bounded, key=f"http {origin}")
    return replace(stack, **changes) if changes else stack


class _PerOrigin:
    """The decorated senders of one transport, one per origin, made on first use."""

    def __init__(self, stack: Stack, make: Callable[[Stack], Callable[..., Any]]) -> None:
        self._stack = stack
        self._make = make
        self._senders: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def get(self, url: Any) -> Callable[..., Any]:
        origin = _origin(url)
        sender = self._senders.get(origin)
        if sender is None:
            with self._lock:
                sender = self._senders.get(origin)
                if sender is None:
                    sender = self._senders[origin] = self._make(_named(self._stack, origin))
        return sender


_RETRY_COUNT = "x-stainless-retry-count"
_ATTEMPTS = "resilience.attempts"


def _window_cap(stack: Stack) -> float:
    """The most seconds one server delay may hold an origin's window: the stack's own cap."""
    for policy in (stack.retry, stack.rate_limited):
        if policy is not None:
            return float(policy.retry_after_cap)  # type: ignore[arg-type]
    return 60.0


def _prepare(request: Any) -> BackoffWindow:
    """
    What is decided before one attempt is sent: the backoff window it must wait out.

    The one place that looks at a request before it goes (its key, its retry count and,
    with deadlines, its timeouts), shared by the sync and async, httpx and httpx2
    transports. A request an SDK marked with ``x-stainless-retry-count`` carries the number
    of retries taken so far, as the SDK's own loop sends it.
    """
    taken = request.extensions.get(_ATTEMPTS, 0)
    request.extensions[_ATTEMPTS] = taken + 1
    if taken and _RETRY_COUNT in request.headers:
        request.headers[_RETRY_COUNT] = str(taken)
    return backoff_window(window_key(request.url, request.headers))


def _after(response: Any, window: BackoffWindow, cap: float) -> None:
    """An error response opens the window for the server's delay, at most *cap* seconds."""
    delay = server_delay(response)
    if delay is not None and delay > 0.0:
        window.set(min(delay, cap), reason=f"HTTP {response.status_code}")


def _attempt(
    inner: Any,
    request: Any,
    cap: float = 60.0,
    header: str | None = None,
    style: str = "seconds",
) -> Any:
    """One attempt through a sync httpx or httpx2 transport *inner*."""
    window = _prepare(request)
    if window.remaining() > 0.0:
        _window_within_deadline(window)
        window.wait()
    _within_deadline(request, header, style)
    response = inner.handle_request(request)
    if response.status_code >= 400:
        response.read()  # frees the connection; the body stays readable
        response.close()
        _after(response, window, cap)
    return response


async def _attempt_async(
    inner: Any,
    request: Any,
    cap: float = 60.0,
    header: str | None = None,
    style: str = "seconds",
) -> Any:
    """One attempt through an async httpx or httpx2 transport *inner*."""
    window = _prepare(request)
    if window.remaining() > 0.0:
        _window_within_deadline(window)
        await window.wait_async()
    _within_deadline(request, header, style)
    response = await inner.handle_async_request(request)
    if response.status_code >= 400:
        await response.aread()
        await response.aclose()
        _after(response, window, cap)
    return response


class ResilientTransport(httpx.BaseTransport):
    """
    A sync httpx transport that sends each request through a resilience stack.

    Args:
        stack: The policies (a ``Stack`` or its mapping); default ``presets.tinker()``.
        transport: The transport that really sends (default ``httpx.HTTPTransport()``).
        deadline_header: Send the time left before ``resilience.deadline()`` downstream in
            this header (such as ``"grpc-timeout"`` or ``"x-request-timeout"``).
        deadline_format: ``"grpc"`` (``250m``) or ``"seconds"`` (``0.250``); default
            ``"grpc"`` for a ``grpc-timeout`` header, else ``"seconds"``.

    Under a deadline every request's timeouts are at most ``remaining()``, and a request
    whose deadline has already passed is not sent (``DeadlineExceededError``).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        stack: Stack | Mapping[str, Any] | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        deadline_header: str | None = None,
        deadline_format: str | None = None,
    ) -> None:
        self._inner = transport if transport is not None else httpx.HTTPTransport()
        self.stack = tinker() if stack is None else _as_stack(stack)
        self._senders = _PerOrigin(self.stack, lambda s: s(self._send_once))
        self._cap = _window_cap(self.stack)
        self._deadline_header = deadline_header
        self._deadline_style = _style(deadline_header, deadline_format)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the stack."""
        response: httpx.Response = self._senders.get(request.url)(request)
        return response

    def _send_once(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = _attempt(
            self._inner, request, self._cap, self._deadline_header, self._deadline_style
        )
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """
    An async httpx transport that sends each request through a resilience stack.

    Args:
        stack: The policies (a ``Stack`` or its mapping); default ``presets.tinker()``.
        transport: The transport that really sends (default ``httpx.AsyncHTTPTransport()``).
        deadline_header: As for ``ResilientTransport``.
        deadline_format: As for ``ResilientTransport``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        stack: Stack | Mapping[str, Any] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        deadline_header: str | None = None,
        deadline_format: str | None = None,
    ) -> None:
        self._inner = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.stack = tinker() if stack is None else _as_stack(stack)
        self._senders = _PerOrigin(self.stack, lambda s: s(self._send_once))
        self._cap = _window_cap(self.stack)
        self._deadline_header = deadline_header
        self._deadline_style = _style(deadline_header, deadline_format)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the stack."""
        response: httpx.Response = await self._senders.get(request.url)(request)
        return response

    async def _send_once(self, request: httpx.Request) -> httpx.Response:
        response: httpx.Response = await _attempt_async(
            self._inner, request, self._cap, self._deadline_header, self._deadline_style
        )
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
