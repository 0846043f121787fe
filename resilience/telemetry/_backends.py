"""
Reporter backends: ``HttpBackend``, which POSTs each ``Batch`` as JSON.

A backend is any callable receiving a ``Batch``; raising signals a failed send, which the
reporter retries with its ``Backoff``.
"""

from __future__ import annotations

import json

from collections.abc import Mapping

from resilience._validate import duration
from resilience.telemetry._reporter_events import Batch


__all__ = ["HttpBackend"]


class HttpBackend:
    """
    POST each batch as JSON to *url*, with httpx if installed, else ``urllib``.

    A non-2xx answer or a connection error raises, so the reporter retries it.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("headers", "timeout", "url")

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 5.0
    ) -> None:
        target: object = url
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            msg = f"url must be an http:// or https:// URL, got {url!r}"
            raise ValueError(msg)
        self.url = url
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.timeout = duration("HttpBackend", "timeout", timeout, strict=True)

    def __call__(self, batch: Batch) -> None:
        """Send *batch*; raise on failure."""
        body = json.dumps(batch.to_dict()).encode()
        try:
            import httpx  # noqa: PLC0415 - optional dependency
        except ImportError:  # pragma: no cover - httpx is installed in our test environment
            self._post_urllib(body)
            return
        httpx.post(
            self.url, content=body, headers=self.headers, timeout=self.timeout
        ).raise_for_status()

    def _post_urllib(self, body: bytes) -> None:
        import urllib.request  # noqa: PLC0415

        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()

    def __repr__(self) -> str:
        return f"HttpBackend({self.url!r})"
