"""resilience.http: the Tinker SDK's HTTP retry rules, against a real loopback server."""

from __future__ import annotations

import urllib.error
import urllib.request

import httpx
import pytest
import requests

from resilience import Backoff, retry
from resilience.http import (
    is_retryable_error,
    is_retryable_response,
    is_retryable_status,
    server_delay,
    status_of,
)

from .httpserver import serve


@pytest.fixture(name="base", scope="module")
def _base():
    with serve() as (url, _):
        yield url


class TestStatusRules:
    @pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
    def test_retryable(self, status):
        """408, 409, 429 and every 5xx are retried."""
        assert is_retryable_status(status)

    @pytest.mark.parametrize("status", [200, 201, 301, 400, 401, 403, 404, 410, 422])
    def test_not_retryable(self, status):
        """Other statuses are not."""
        assert not is_retryable_status(status)

    def test_should_retry_header_wins(self):
        """x-should-retry: true/false overrides the status, exactly as spelled."""
        assert is_retryable_status(400, {"X-Should-Retry": "true"})
        assert not is_retryable_status(503, {"x-should-retry": "false"})
        assert is_retryable_status(503, {"x-should-retry": "False"})  # not an exact match


class TestHttpx:
    def test_responses(self, base):
        """httpx responses are classified by status and headers."""
        with httpx.Client() as client:
            assert is_retryable_response(client.get(f"{base}/status/503"))
            assert not is_retryable_response(client.get(f"{base}/status/404"))
            assert not is_retryable_response(client.get(f"{base}/status/200"))
            assert is_retryable_response(client.get(f"{base}/status/200?x-should-retry=true"))
            assert not is_retryable_response(client.get(f"{base}/status/429?x-should-retry=false"))

    def test_status_error(self, base):
        """HTTPStatusError follows its response's status; its Retry-After is the delay."""
        with httpx.Client() as client:
            response = client.get(f"{base}/status/429?retry-after=3")
            with pytest.raises(httpx.HTTPStatusError) as info:
                response.raise_for_status()
        assert is_retryable_error(info.value)
        assert 3.0 == server_delay(info.value)
        assert 429 == status_of(info.value)

    def test_connection_error_and_timeout(self, base):
        """Connection failures and timeouts are retried."""
        with serve() as (dead, _):
            pass  # the port is closed now
        with pytest.raises(httpx.ConnectError) as refused:
            httpx.get(dead + "/status/200")
        assert is_retryable_error(refused.value)
        with pytest.raises(httpx.ReadTimeout) as slow:
            httpx.get(f"{base}/slow/0.2", timeout=0.02)
        assert is_retryable_error(slow.value)

    def test_no_delay_when_server_says_no(self, base):
        """A response marked x-should-retry: false yields no server delay."""
        response = httpx.get(f"{base}/status/503?retry-after=5&x-should-retry=false")
        assert None is server_delay(response)

    def test_retry_rides_through(self, base, clock):
        """@retry with the HTTP predicates retries 503 and 429, honouring Retry-After."""

        @retry(
            on_result=is_retryable_response, delay_hook=server_delay, backoff=Backoff(jitter="none")
        )
        def get():
            return httpx.get(f"{base}/sequence/ride/503,429,200?retry-after=2")

        assert 200 == get().status_code
        assert [2.0, 2.0] == clock.sleeps

    @pytest.mark.anyio
    async def test_async_client(self, base, clock):
        """The same predicates work with httpx's async client."""

        @retry(on=is_retryable_error, backoff=Backoff(jitter="none"))
        async def get():
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{base}/sequence/async/500,200")
                response.raise_for_status()
                return response

        assert 200 == (await get()).status_code
        assert [0.5] == clock.sleeps


class TestRequestsAndUrllib:
    def test_requests(self, base):
        """requests' responses and HTTPError are classified the same way."""
        response = requests.get(f"{base}/status/502?Retry-After=1.5", timeout=5)
        assert is_retryable_response(response)
        with pytest.raises(requests.HTTPError) as info:
            response.raise_for_status()
        assert is_retryable_error(info.value)
        assert 1.5 == server_delay(info.value)
        assert not is_retryable_response(requests.get(f"{base}/status/401", timeout=5))

    def test_requests_connection_error(self):
        """A refused connection from requests is retried."""
        with serve() as (dead, _):
            pass
        with pytest.raises(requests.ConnectionError) as info:
            requests.get(dead, timeout=5)
        assert is_retryable_error(info.value)

    def test_urllib(self, base):
        """urllib's HTTPError carries its status and headers."""
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/status/503?retry-after=4", timeout=5)
        info.value.close()
        assert is_retryable_error(info.value)
        assert 4.0 == server_delay(info.value)


class TestOtherObjects:
    def test_sdk_style_error(self):
        """An SDK error with .status_code is classified by it."""

        class APIStatusError(Exception):
            status_code = 409

        assert is_retryable_error(APIStatusError())

    def test_plain_errors(self):
        """Builtin timeouts and connection errors are retried; other errors are not."""
        assert is_retryable_error(TimeoutError())
        assert is_retryable_error(ConnectionResetError())
        assert not is_retryable_error(ValueError())

    def test_status_of_nothing(self):
        """Objects without a status give None and are not retried."""
        assert None is status_of(object())
        assert not is_retryable_response("text")


class TestChain:
    """is_retryable_error walks __cause__/__context__ as Python's traceback shows them."""

    def _status(self, status, headers=None):
        class StatusError(Exception):
            def __init__(self):
                super().__init__(status)
                self.status_code = status
                self.headers = headers or {}

        return StatusError()

    def test_own_error_raised_from_a_503(self):
        """Your own error raised from a 503 is retried; from a 404 it is not."""
        for status, expected in ((503, True), (404, False)):
            with pytest.raises(RuntimeError) as info:
                try:
                    raise self._status(status)
                except Exception as inner:
                    raise RuntimeError("wrapped") from inner
            assert expected is is_retryable_error(info.value)

    def test_context_followed_unless_suppressed(self):
        """An error raised while handling a timeout is retried, unless `from None`."""
        with pytest.raises(KeyError) as implicit:
            try:
                raise TimeoutError
            except TimeoutError:
                raise KeyError("x")
        assert is_retryable_error(implicit.value)
        with pytest.raises(KeyError) as suppressed:
            try:
                raise TimeoutError
            except TimeoutError:
                raise KeyError("x") from None
        assert not is_retryable_error(suppressed.value)

    def test_nearest_verdict_wins(self):
        """A 400 raised from a connection error is the 400's verdict: no retry."""
        error = self._status(400)
        error.__cause__ = ConnectionError()
        assert not is_retryable_error(error)

    def test_cycles_end(self):
        """A chain that loops back on itself ends the walk."""
        first, second = ValueError(), KeyError()
        first.__cause__, second.__cause__ = second, first
        assert not is_retryable_error(first)

    def test_control_flow_never(self):
        """CancelledError and KeyboardInterrupt are never retried, whatever their chain."""
        import asyncio

        cancelled = asyncio.CancelledError()
        cancelled.__cause__ = ConnectionError()
        assert not is_retryable_error(cancelled)
        assert not is_retryable_error(KeyboardInterrupt())

    def test_sdk_connection_errors_by_name(self):
        """An SDK's APIConnectionError without a cause (a watchdog's) is still retried."""
        import openai

        request = __import__("httpx2").Request("GET", "http://127.0.0.1:9/")
        assert is_retryable_error(openai.APIConnectionError(request=request))
        assert is_retryable_error(openai.APITimeoutError(request=request))

    def test_sdk_error_wrapping_httpx2(self):
        """openai's APIConnectionError raised from an httpx2.ConnectError is retried."""
        import httpx2

        with pytest.raises(httpx2.ConnectError) as refused:
            with serve() as (dead, _):
                pass
            httpx2.get(dead)
        assert is_retryable_error(refused.value)

    def test_server_delay_walks_the_chain(self):
        """The first error in the chain with headers gives the server's delay."""
        error = RuntimeError("wrapped")
        error.__cause__ = self._status(429, {"retry-after": "7"})
        assert 7.0 == server_delay(error)

    def test_no_library_imported(self):
        """Classifying never imports a client library the caller did not import."""
        import subprocess
        import sys

        code = (
            "import sys; from resilience.http import is_retryable_error, server_delay;"
            "is_retryable_error(ConnectionError()); server_delay(ValueError());"
            "print(sorted(m for m in ('grpc','botocore','aiohttp','httpx2','openai',"
            "'anthropic','tinker','requests','urllib3') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]" == out.stdout.strip()
