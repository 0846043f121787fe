"""
HTTP rules for retrying: which responses and exceptions deserve another attempt.

The rules are the Tinker SDK's (seed audit §2.1), which most HTTP SDKs share:

1. ``x-should-retry: true`` / ``false`` from the server wins over every other rule
   (an exact, case-sensitive match, as the SDK does).
2. 408, 409, 429 and every 5xx are retried; other statuses are not.
3. Timeouts and connection errors are retried (no response, so no Retry-After).

Works with httpx and requests responses and exceptions, ``urllib`` errors, SDK errors that
carry ``.status_code``/``.response``, or a plain status code plus headers. Neither client is
imported here: an object can only come from a client the caller already imported.

Use the predicates directly in policies::

    @retry(on=resilience.http.is_retryable_error, on_result=resilience.http.is_retryable_response)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import sys

from resilience import _exports
from resilience._quota import Quota, parse_quota
from resilience._retry_after import _lower_headers, retry_after_from


__all__ = [
    "RETRYABLE_STATUSES",
    "Quota",
    "is_retryable_error",
    "is_retryable_response",
    "is_retryable_status",
    "parse_quota",
    "server_delay",
    "status_of",
]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""The 4xx statuses worth retrying; every status >= 500 is retried too."""


def is_retryable_status(status: int, headers: object = None) -> bool:
    """
    Whether a response with *status* (and *headers*) should be retried.

    ``x-should-retry`` in *headers* overrides the status rules.
    """
    if headers is not None:
        verdict = _lower_headers(headers, ("x-should-retry",)).get("x-should-retry")
        if verdict == "true":
            return True
        if verdict == "false":
            return False
    return status in RETRYABLE_STATUSES or status >= 500


def status_of(obj: object) -> int | None:
    """Return the HTTP status of a response, an HTTP error or an SDK error, or None."""
    for holder in (obj, getattr(obj, "response", None)):
        if holder is None:
            continue
        for attribute in ("status_code", "status", "code"):
            value = getattr(holder, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _headers_of(obj: object) -> object:
    response = getattr(obj, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
        if headers is not None:
            return headers
    return getattr(obj, "headers", None)


def is_retryable_response(response: object) -> bool:
    """
    ``on_result`` predicate: whether a returned response should be retried.

    Objects without an HTTP status are never retried.
    """
    status = status_of(response)
    if status is None or status < 400:
        return _forced(response)
    return is_retryable_status(status, _headers_of(response))


def _forced(response: object) -> bool:
    """A 2xx/3xx response is retried only when the server says ``x-should-retry: true``."""
    headers = _headers_of(response)
    if headers is None:
        return False
    return _lower_headers(headers, ("x-should-retry",)).get("x-should-retry") == "true"


def is_retryable_error(exc: BaseException) -> bool:
    """
    ``on`` predicate: whether an exception from an HTTP call should be retried.

    Timeouts and connection failures are retried; an error carrying a response (httpx's
    ``HTTPStatusError``, requests' ``HTTPError``, urllib's ``HTTPError``, SDK status errors)
    follows the status rules; anything else is not retried.
    """
    if _is_transport_failure(exc):
        return True
    status = status_of(exc)
    if status is not None:
        return is_retryable_status(status, _headers_of(exc))
    return False


def _is_transport_failure(exc: BaseException) -> bool:
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        # TimeoutException, NetworkError, RemoteProtocolError...; not UnsupportedProtocol
        return not isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError)
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.Timeout | requests.ConnectionError):
        return True
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    urllib_error = sys.modules.get("urllib.error")
    return (
        urllib_error is not None
        and isinstance(exc, urllib_error.URLError)
        and not isinstance(exc, urllib_error.HTTPError)
    )


def server_delay(outcome: object) -> float | None:
    """
    Delay hook: the server's Retry-After for a retryable outcome, else None.

    A response the server marked ``x-should-retry: false`` gives None.
    """
    headers = _headers_of(outcome)
    if headers is not None:
        verdict = _lower_headers(headers, ("x-should-retry",)).get("x-should-retry")
        if verdict == "false":
            return None
    return retry_after_from(outcome)


_exports.publish(__name__, globals())  # Quota and parse_quota live in _quota
