"""
Resilient ``httpx2`` transports: ``resilience.transport``'s, for the clients of ``httpx2``.

Current OpenAI (3.x) and Anthropic (2.x) SDKs are built on ``httpx2``, whose clients accept
only ``httpx2`` transports::

    import anthropic
    from resilience import presets
    from resilience.transport_httpx2 import ResilientTransport

    client = anthropic.Anthropic(
        max_retries=0,  # one retry loop, ours
        http_client=anthropic.DefaultHttpxClient(transport=ResilientTransport(presets.anthropic())),
    )

They behave exactly as the httpx ones (one stack per origin, the shared backoff window of
the origin and API key, error bodies read before a retry); see ``resilience.transport``.

Needs httpx2 (installed with those SDKs).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2

from resilience._compose import Stack, _as_stack
from resilience.presets import tinker
from resilience.transport import (
    _attempt,
    _attempt_async,
    _PerOrigin,
    _style,
    _window_cap,
)


__all__ = ["AsyncResilientTransport", "ResilientTransport"]


class ResilientTransport(httpx2.BaseTransport):
    """
    A sync httpx2 transport that sends each request through a resilience stack.

    Args:
        stack: The policies (a ``Stack`` or its mapping); default ``presets.tinker()``.
        transport: The transport that really sends (default ``httpx2.HTTPTransport()``).
        deadline_header: As for ``resilience.transport.ResilientTransport``.
        deadline_format: As for ``resilience.transport.ResilientTransport``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        stack: Stack | Mapping[str, Any] | None = None,
        *,
        transport: httpx2.BaseTransport | None = None,
        deadline_header: str | None = None,
        deadline_format: str | None = None,
    ) -> None:
        self._inner = transport if transport is not None else httpx2.HTTPTransport()
        self.stack = tinker() if stack is None else _as_stack(stack)
        self._senders = _PerOrigin(self.stack, lambda s: s(self._send_once))
        self._deadline_header = deadline_header
        self._deadline_style = _style(deadline_header, deadline_format)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send *request* through the stack."""
        response: httpx2.Response = self._senders.get(request.url)(request)
        return response

    def _send_once(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = _attempt(
            self._inner,
            request,
            _window_cap(self.stack),
            self._deadline_header,
            self._deadline_style,
        )
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()


class AsyncResilientTransport(httpx2.AsyncBaseTransport):
    """
    An async httpx2 transport that sends each request through a resilience stack.

    Args:
        stack: The policies (a ``Stack`` or its mapping); default ``presets.tinker()``.
        transport: The transport that really sends (default ``httpx2.AsyncHTTPTransport()``).
        deadline_header: As for ``resilience.transport.ResilientTransport``.
        deadline_format: As for ``resilience.transport.ResilientTransport``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        stack: Stack | Mapping[str, Any] | None = None,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        deadline_header: str | None = None,
        deadline_format: str | None = None,
    ) -> None:
        self._inner = transport if transport is not None else httpx2.AsyncHTTPTransport()
        self.stack = tinker() if stack is None else _as_stack(stack)
        self._senders = _PerOrigin(self.stack, lambda s: s(self._send_once))
        self._deadline_header = deadline_header
        self._deadline_style = _style(deadline_header, deadline_format)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send *request* through the stack."""
        response: httpx2.Response = await self._senders.get(request.url)(request)
        return response

    async def _send_once(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = await _attempt_async(
            self._inner,
            request,
            _window_cap(self.stack),
            self._deadline_header,
            self._deadline_style,
        )
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
