"""The httpx transports under a deadline: timeouts clipped, the time left sent downstream."""

from __future__ import annotations

import httpx
import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import DeadlineExceededError, deadline
from resilience._deadline import format_timeout
from resilience.testing import FakeClock
from resilience.transport import AsyncResilientTransport, ResilientTransport


pytestmark = pytest.mark.anyio


class Capture:
    """The inner transport: keeps every request it is given and answers 200."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


STACK = {"retry": {"attempts": 1}}


def test_timeouts_clipped_and_header(clock: FakeClock) -> None:
    """Every timeout is at most remaining(); the header carries it in gRPC form."""
    seen = Capture()
    transport = ResilientTransport(
        STACK, transport=httpx.MockTransport(seen), deadline_header="grpc-timeout"
    )
    with httpx.Client(transport=transport, timeout=httpx.Timeout(10.0, connect=1.0)) as client:
        with deadline(2.5):
            client.get("http://example.invalid/a")
        client.get("http://example.invalid/b")
    clipped, free = seen.requests
    assert {"connect": 1.0, "read": 2.5, "write": 2.5, "pool": 2.5} == clipped.extensions["timeout"]
    assert "2500000u" == clipped.headers["grpc-timeout"]
    assert 10.0 == free.extensions["timeout"]["read"]
    assert "grpc-timeout" not in free.headers


def test_plain_seconds_header(clock: FakeClock) -> None:
    """Any other header name gets plain seconds (or the format asked for)."""
    seen = Capture()
    transport = ResilientTransport(
        STACK, transport=httpx.MockTransport(seen), deadline_header="x-request-timeout"
    )
    with httpx.Client(transport=transport) as client, deadline(1.25):
        client.get("http://example.invalid/")
    assert "1.250" == seen.requests[0].headers["x-request-timeout"]


def test_passed_deadline_not_sent(clock: FakeClock) -> None:
    """A request whose deadline has passed is not sent."""
    seen = Capture()
    transport = ResilientTransport(STACK, transport=httpx.MockTransport(seen))
    with httpx.Client(transport=transport) as client, deadline(1.0):
        clock.advance(2.0)
        with pytest.raises(DeadlineExceededError, match="not sent"):
            client.get("http://example.invalid/")
    assert [] == seen.requests


async def test_async_transport(clock: FakeClock) -> None:
    """The async transport clips the same way."""
    seen = Capture()
    transport = AsyncResilientTransport(
        STACK, transport=httpx.MockTransport(seen), deadline_header="grpc-timeout"
    )
    async with httpx.AsyncClient(transport=transport) as client:
        async with deadline(0.5):
            await client.get("http://example.invalid/")
    assert 0.5 == seen.requests[0].extensions["timeout"]["read"]
    assert "500000u" == seen.requests[0].headers["grpc-timeout"]


def test_bad_format() -> None:
    """An unknown format names the parameter."""
    with pytest.raises(ValueError, match="deadline_format"):
        ResilientTransport(STACK, deadline_header="x", deadline_format="ms")


@given(st.floats(min_value=0.0, max_value=10**7))
def test_grpc_format(seconds: float) -> None:
    """gRPC form: at most 8 digits and a unit, never more time than is left."""
    text = format_timeout(seconds, "grpc")
    digits, unit = text[:-1], text[-1]
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "S": 1.0, "M": 60.0, "H": 3600.0}[unit]
    assert len(digits) <= 8
    assert digits.isdigit()
    assert int(digits) * scale <= seconds * (1 + 1e-12)


def test_window_past_deadline_refused_at_once(clock: FakeClock) -> None:
    """A backoff window that outlasts the deadline is refused at once, without waiting."""
    from resilience import RateLimitedError, backoff_window
    from resilience.transport import window_key

    seen = Capture()
    transport = ResilientTransport(STACK, transport=httpx.MockTransport(seen))
    backoff_window(window_key(httpx.URL("http://example.invalid/"))).set(30.0)
    with httpx.Client(transport=transport) as client, deadline(5.0):
        with pytest.raises(RateLimitedError, match="outlasts the deadline of 5 s"):
            client.get("http://example.invalid/")
    assert 0.0 == clock.monotonic()
    assert [] == seen.requests


def test_httpx2_transport_clipped_too(clock: FakeClock) -> None:
    """The httpx2 transports share the attempt: their requests are clipped the same way."""
    httpx2 = pytest.importorskip("httpx2")
    from resilience.transport_httpx2 import ResilientTransport as Httpx2Transport

    seen: list[object] = []

    def server(request: object) -> object:
        seen.append(request)
        return httpx2.Response(200)

    transport = Httpx2Transport(
        STACK, transport=httpx2.MockTransport(server), deadline_header="grpc-timeout"
    )
    with httpx2.Client(transport=transport) as client, deadline(1.5):
        client.get("http://example.invalid/")
    assert 1.5 == seen[0].extensions["timeout"]["read"]  # type: ignore[attr-defined]
    assert "1500000u" == seen[0].headers["grpc-timeout"]  # type: ignore[attr-defined]
