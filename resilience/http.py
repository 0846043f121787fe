"""
HTTP (and RPC) rules for retrying: which responses and exceptions deserve another attempt.

The rules are the Tinker, OpenAI and Anthropic SDKs' (seed audit §2.1), which most HTTP
SDKs share:

1. ``x-should-retry: true`` / ``false`` from the server wins over every other rule
   (an exact, case-sensitive match, as the SDKs do).
2. 408, 409, 429 and every 5xx (529 "overloaded" included) are retried; other statuses are
   not.
3. Timeouts and connection errors are retried (no response, so no Retry-After).

An exception is classified by walking its chain (the exception, then its ``__cause__``, or
its ``__context__`` when Python would show it): the first link that says "retry" or "do not
retry" decides, so an SDK's ``APIConnectionError`` raised from an ``httpx.ConnectError``,
or your own error raised from a 503, is classified by what really happened. Recognised, by
duck typing where it can:

- anything with an HTTP ``status_code``/``status``/``code`` and ``headers`` or a
  ``response``: httpx, httpx2, requests, urllib, aiohttp's ``ClientResponseError``, the
  OpenAI/Anthropic/Tinker SDKs' ``APIStatusError`` family (``RateLimitError``, 529...);
- transport failures: httpx and httpx2 ``TransportError``, requests' and urllib3's
  connection and timeout errors, aiohttp's ``ClientConnectionError`` and
  ``ServerTimeoutError``, urllib's ``URLError``, the builtin ``TimeoutError`` and
  ``ConnectionError``, and the SDKs' ``APIConnectionError``/``APITimeoutError``/
  ``RetryableException``;
- gRPC ``RpcError``: ``UNAVAILABLE``, ``RESOURCE_EXHAUSTED``, ``DEADLINE_EXCEEDED`` and
  ``ABORTED`` are retried; a ``grpc-retry-pushback-ms`` trailer is the server's delay, and
  a negative one means "do not retry";
- botocore ``ClientError``: throttling and transient error codes and 5xx/429 statuses are
  retried, ``x-amz-retry-after`` (milliseconds) is the server's delay; botocore's
  connection and read-timeout errors are retried.

No client library is imported here: a class is looked up in ``sys.modules``, so an object
can only be recognised as coming from a library the caller already imported.

Use the predicates directly in policies::

    @retry(on=resilience.http.is_retryable_error, on_result=resilience.http.is_retryable_response,
           delay_hook=resilience.http.server_delay)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import math
import sys

from collections.abc import Iterator, Mapping

from resilience import _exports
from resilience._quota import Quota, parse_quota
from resilience._retry_after import _lower_headers, retry_after_from


__all__ = [
    "GRPC_RETRYABLE_CODES",
    "RETRYABLE_STATUSES",
    "Quota",
    "THROTTLING_ERROR_CODES",
    "TRANSIENT_ERROR_CODES",
    "causes",
    "is_retryable_error",
    "is_retryable_response",
    "is_retryable_status",
    "parse_quota",
    "server_delay",
    "status_of",
]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""The 4xx statuses worth retrying; every status >= 500 is retried too."""

GRPC_RETRYABLE_CODES = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"}
)
"""The gRPC status codes (``grpc.StatusCode`` names) worth retrying."""

THROTTLING_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
"""AWS error codes that mean "slow down" (botocore's standard retry mode's list)."""

TRANSIENT_ERROR_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
    }
)
"""AWS error codes for failures that a second attempt may not meet."""

_SDK_CONNECTION_ERRORS = frozenset(
    {
        "APIConnectionError",
        "APITimeoutError",
        "RetryableException",
        "RetryableError",
    }
)
"""The SDK families' (OpenAI, Anthropic, Tinker) errors for "no answer came back"."""

_MAX_CHAIN = 32  # a chain longer than this is a bug in someone's code, not a cause to follow


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
    for holder in (obj, _attribute(obj, "response")):
        if holder is None:
            continue
        for attribute in ("status_code", "status", "code"):
            value = _attribute(holder, attribute)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def causes(exc: BaseException) -> Iterator[BaseException]:
    """
    Yield *exc* and the exceptions behind it, nearest first, as Python's traceback shows them.

    Each link's ``__cause__`` is followed, or its ``__context__`` unless it was suppressed
    (``raise ... from None``). Cycles and absurdly long chains end the walk.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        yield current
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause


def _attribute(obj: object, name: str) -> object:
    """Return ``obj.<name>``, or None when it is missing or a foreign property raises."""
    try:
        return getattr(obj, name, None)
    except Exception:  # a foreign property may raise anything; classification must not
        return None


def _headers_of(obj: object) -> object:
    response = _attribute(obj, "response")
    if response is not None:
        headers = _attribute(response, "headers")
        if headers is not None:
            return headers
    return _attribute(obj, "headers")


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
    ``on`` predicate: whether an exception from an HTTP or RPC call should be retried.

    Walks the exception's chain (see ``causes``); the first link with a verdict decides.
    Timeouts and connection failures are retried; an error carrying a status follows the
    status rules; gRPC and botocore errors follow their codes; anything else is not retried.
    Control flow (``CancelledError``, ``KeyboardInterrupt``...) is never retried.
    """
    if not isinstance(exc, Exception):
        return False
    for link in causes(exc):
        verdict = _verdict(link)
        if verdict is not None:
            return verdict
    return False


def _verdict(exc: BaseException) -> bool | None:
    """One link's verdict: retry, do not retry, or None (it says nothing; look deeper)."""
    grpc_code = _grpc_code(exc)
    if grpc_code is not None:
        pushback = _grpc_pushback(exc)
        if pushback is not None and pushback < 0:
            return False
        return grpc_code in GRPC_RETRYABLE_CODES
    aws = _aws_error(exc)
    if aws is not None:
        return _aws_verdict(aws)
    status = status_of(exc)
    if status is not None:
        return is_retryable_status(status, _headers_of(exc))
    if _is_transport_failure(exc):
        return True
    return None


def _class_names(exc: BaseException) -> Iterator[str]:
    for klass in type(exc).__mro__:
        yield klass.__name__


def _is_transport_failure(exc: BaseException) -> bool:
    for name in ("httpx", "httpx2"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.TransportError):
            # TimeoutException, NetworkError, RemoteProtocolError...; not UnsupportedProtocol
            return not isinstance(exc, module.UnsupportedProtocol | module.LocalProtocolError)
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if any(name in _SDK_CONNECTION_ERRORS for name in _class_names(exc)):
        return True
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.Timeout | requests.ConnectionError):
        return True
    urllib3 = sys.modules.get("urllib3.exceptions")
    if urllib3 is not None and isinstance(
        exc, urllib3.TimeoutError | urllib3.ProtocolError | urllib3.NewConnectionError
    ):
        return True
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ServerTimeoutError
    ):
        # a certificate or TLS failure will fail the same way next time
        return not isinstance(exc, aiohttp.ClientSSLError)
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(
        exc, botocore.ConnectionError | botocore.HTTPClientError
    ):
        return True
    urllib_error = sys.modules.get("urllib.error")
    return (
        urllib_error is not None
        and isinstance(exc, urllib_error.URLError)
        and not isinstance(exc, urllib_error.HTTPError)
    )


# -- gRPC -----------------------------------------------------------------------------------


def _grpc_code(exc: BaseException) -> str | None:
    """The status code name of a ``grpc.RpcError`` that carries one, else None."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(exc, grpc.RpcError):
        return None
    code = _attribute(exc, "code")
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:  # a foreign call; an error without a code says nothing
        return None
    name = _attribute(value, "name")
    return name if isinstance(name, str) else None


def _grpc_pushback(exc: BaseException) -> float | None:
    """The ``grpc-retry-pushback-ms`` trailer in seconds (negative: do not retry), or None."""
    trailers = _attribute(exc, "trailing_metadata")
    if not callable(trailers):
        return None
    try:
        pairs = trailers() or ()
        for key, value in pairs:
            if str(key).lower() == "grpc-retry-pushback-ms":
                text = value.decode() if isinstance(value, bytes) else str(value)
                number = float(text.strip())
                return number / 1000.0 if math.isfinite(number) else None
    except Exception:  # a malformed trailer is no hint
        return None
    return None


# -- botocore -------------------------------------------------------------------------------


def _aws_error(exc: BaseException) -> Mapping[str, object] | None:
    """The parsed error response of a botocore ``ClientError`` (duck typed), else None."""
    response = _attribute(exc, "response")
    if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
        return response
    return None


def _aws_verdict(response: Mapping[str, object]) -> bool:
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    if code in THROTTLING_ERROR_CODES or code in TRANSIENT_ERROR_CODES:
        return True
    status = _aws_status(response)
    return status is not None and (status == 429 or status >= 500)


def _aws_status(response: Mapping[str, object]) -> int | None:
    metadata = response.get("ResponseMetadata")
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _aws_delay(response: Mapping[str, object]) -> float | None:
    metadata = response.get("ResponseMetadata")
    headers = metadata.get("HTTPHeaders") if isinstance(metadata, Mapping) else None
    if headers is None:
        return None
    text = _lower_headers(headers, ("x-amz-retry-after",)).get("x-amz-retry-after")
    if text is None:
        return retry_after_from(_Headers(headers))
    try:
        milliseconds = float(text)
    except ValueError:
        return None
    return milliseconds / 1000.0 if math.isfinite(milliseconds) and milliseconds >= 0 else None


class _Headers:
    """Lets ``retry_after_from`` read a bare header mapping."""

    __slots__ = ("headers",)

    def __init__(self, headers: object) -> None:
        self.headers = headers


def server_delay(outcome: object) -> float | None:
    """
    Delay hook: the server's delay for a retryable outcome, else None.

    Reads Retry-After (and ``retry-after-ms``) from a response or from the first error in
    an exception's chain that carries headers, gRPC's ``grpc-retry-pushback-ms`` trailer and
    AWS's ``x-amz-retry-after``. A response the server marked ``x-should-retry: false``
    gives None.
    """
    if isinstance(outcome, BaseException):
        for link in causes(outcome):
            delay = _link_delay(link)
            if delay is not None:
                return delay
        return None
    return _headers_delay(outcome)


def _link_delay(link: BaseException) -> float | None:
    if _grpc_code(link) is not None:
        pushback = _grpc_pushback(link)
        return pushback if pushback is not None and pushback >= 0 else None
    aws = _aws_error(link)
    if aws is not None:
        return _aws_delay(aws)
    return _headers_delay(link)


def _headers_delay(outcome: object) -> float | None:
    headers = _headers_of(outcome)
    if headers is not None:
        verdict = _lower_headers(headers, ("x-should-retry",)).get("x-should-retry")
        if verdict == "false":
            return None
    return retry_after_from(outcome)


_exports.publish(__name__, globals())  # Quota and parse_quota live in _quota
