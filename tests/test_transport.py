"""The resilient httpx transports, against a real loopback server."""

from __future__ import annotations

import httpx
import pytest

from resilience import (
    Backoff,
    CircuitBreakerPolicy,
    CircuitOpenError,
    RetryPolicy,
    Stack,
    backoff_window,
)
from resilience.http import is_retryable_response
from resilience.transport import AsyncResilientTransport, ResilientTransport, window_key

from .httpserver import serve


@pytest.fixture(name="server", scope="module")
def _server():
    with serve() as (url, server):
        yield url, server


def test_default_stack_rides_through(server, clock):
    """With the default (Tinker) stack, 503 and 429 are retried until a 200."""
    base, _ = server
    with httpx.Client(transport=ResilientTransport()) as client:
        response = client.get(f"{base}/sequence/t-ride/503,429,200?retry-after=2")
    assert 200 == response.status_code
    assert 2 == len(clock.sleeps)
    assert 2.0 == clock.sleeps[1] or 2.0 == clock.sleeps[0]


def test_last_response_is_readable_after_giving_up(server, clock):
    """When retries run out, the last error response comes back with its body."""
    base, _ = server
    stack = Stack(
        retry=RetryPolicy(attempts=2, on_result=is_retryable_response, backoff=Backoff(base=0))
    )
    with httpx.Client(transport=ResilientTransport(stack)) as client:
        response = client.get(f"{base}/status/503")
    assert (503, b"status 503") == (response.status_code, response.content)


def test_retry_after_opens_shared_window(server, clock):
    """A 429 with Retry-After makes every client with the same key wait the window out."""
    base, _ = server
    headers = {"Authorization": "Bearer secret-1"}
    one_try = Stack(retry=RetryPolicy(attempts=1))
    with httpx.Client(transport=ResilientTransport(one_try), headers=headers) as first:
        assert 429 == first.get(f"{base}/status/429?retry-after=7").status_code
    key = window_key(httpx.URL(base), headers)
    assert "secret" not in key
    assert 7.0 == pytest.approx(backoff_window(key).remaining())
    with httpx.Client(transport=ResilientTransport(one_try), headers=headers) as second:
        assert 200 == second.get(f"{base}/status/200").status_code
    assert [7.0] == pytest.approx(clock.sleeps)
    with httpx.Client(
        transport=ResilientTransport(one_try), headers={"Authorization": "other"}
    ) as other:
        other.get(f"{base}/status/200")
    assert 1 == len(clock.sleeps)  # another API key has its own window


def test_window_key_normalises_origin():
    """Default ports and case do not split a window; paths do not matter."""
    assert window_key(httpx.URL("https://API.example.com:443/v1/x")) == window_key(
        httpx.URL("https://api.example.com")
    )
    assert window_key(httpx.URL("http://h:8080/a")) != window_key(httpx.URL("http://h/a"))


def test_breaker_per_origin(server, clock):
    """An unnamed breaker in the stack becomes one breaker per origin."""
    base, _ = server
    stack = Stack(circuit_breaker=CircuitBreakerPolicy(failure_threshold=1, on=httpx.ConnectError))
    with serve() as (dead, _):
        pass  # a closed port: connections are refused
    with httpx.Client(transport=ResilientTransport(stack)) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(dead)
        with pytest.raises(CircuitOpenError, match="http http://127.0.0.1"):
            client.get(dead)
        assert 200 == client.get(f"{base}/status/200").status_code  # other origin unaffected


@pytest.mark.anyio
async def test_async_transport(server, clock):
    """The async transport retries and honours Retry-After the same way."""
    base, _ = server
    async with httpx.AsyncClient(transport=AsyncResilientTransport()) as client:
        response = await client.get(f"{base}/sequence/t-async/500,429,200?retry-after=3")
    assert 200 == response.status_code
    assert 3.0 in clock.sleeps
