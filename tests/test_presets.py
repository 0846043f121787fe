"""presets.tinker(): the Tinker SDK's schedule and header rules, against a loopback server."""

from __future__ import annotations

import httpx
import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, layers_of
from resilience.presets import tinker, tinker_delay, tinker_retry_handler

from .httpserver import serve


@pytest.fixture(name="base", scope="module")
def _base():
    with serve() as (url, _):
        yield url


def test_schedule_matches_the_sdk(base, clock):
    """503s are retried on 0.5, 1, 2, 4... times a factor in (0.75, 1], as the SDK does."""

    @tinker(max_retries=4)
    def get(client):
        return client.get(f"{base}/sequence/tinker-503/503,503,503,503,200")

    with httpx.Client() as client:
        assert 200 == get(client).status_code
    expected = [0.5, 1.0, 2.0, 4.0]
    assert len(expected) == len(clock.sleeps)
    for nominal, slept in zip(expected, clock.sleeps, strict=True):
        assert 0.75 * nominal < slept <= nominal


def test_gives_up_after_max_retries(base, clock):
    """max_retries=2 means three calls, then the last response is returned."""

    @tinker(max_retries=2)
    def get(client):
        return client.get(f"{base}/status/500")

    with httpx.Client() as client:
        assert 500 == get(client).status_code
    assert 2 == len(clock.sleeps)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("retry-after=5", 5.0), ("retry-after=60", 60.0), ("retry-after-ms=1500", 1.5)],
)
def test_retry_after_obeyed_in_window(base, clock, header, expected):
    """A Retry-After in (0, 60] is the exact wait, with no jitter and no 10 s cap."""

    @tinker(max_retries=1)
    def get(client):
        return client.get(f"{base}/sequence/tinker-{header}/429,200?{header}")

    with httpx.Client() as client:
        assert 200 == get(client).status_code
    assert [expected] == clock.sleeps


@pytest.mark.parametrize("header", ["retry-after=61", "retry-after=0", "retry-after=abc"])
def test_retry_after_outside_window_uses_backoff(base, clock, header):
    """Outside (0, 60] the server's hint is ignored and the backoff applies."""

    @tinker(max_retries=1)
    def get(client):
        return client.get(f"{base}/sequence/tinker-out-{header}/429,200?{header}")

    with httpx.Client() as client:
        assert 200 == get(client).status_code
    assert 0.375 < clock.sleeps[0] <= 0.5


def test_should_retry_false_stops(base, clock):
    """x-should-retry: false is obeyed even on a 503."""

    @tinker()
    def get(client):
        return client.get(f"{base}/status/503?x-should-retry=false")

    with httpx.Client() as client:
        assert 503 == get(client).status_code
    assert [] == clock.sleeps


def test_user_errors_not_retried(base, clock):
    """A 400 is the caller's mistake: no retry."""

    @tinker()
    def get(client):
        return client.get(f"{base}/status/400")

    with httpx.Client() as client:
        assert 400 == get(client).status_code
    assert [] == clock.sleeps


def test_connections_bounded():
    """The preset bounds requests in flight (max_connections)."""
    stack = tinker(max_connections=7, key="sdk")
    assert 7 == stack.bounded.limit
    assert None is tinker(max_connections=None).bounded


def test_retry_handler_preset():
    """The RetryHandler preset retries forever under a progress timeout with ±25% jitter."""
    stack = tinker_retry_handler()
    assert (None, 7200.0) == (stack.retry.attempts, stack.retry.progress_timeout)
    assert Backoff(jitter="range", jitter_amount=0.25) == stack.retry.backoff
    assert 2 == len(layers_of(stack(lambda: None)))


def test_delay_window_rule():
    """tinker_delay returns the server delay only in (0, 60]."""

    class R:
        def __init__(self, value):
            self.headers = {"retry-after": value}

    assert (5.0, 60.0, None, None) == (
        tinker_delay(R("5")),
        tinker_delay(R("60")),
        tinker_delay(R("60.5")),
        tinker_delay(R("0")),
    )


class TestTinkerFormula:
    """The preset's schedule against the SDK's formula (seed notes §1A), for any draw."""

    @staticmethod
    def sdk_delay(retries_taken: int, r: float) -> float:
        """_calculate_retry_timeout without a server hint, as the SDK writes it."""
        n = min(retries_taken, 1000)
        sleep = min(0.5 * pow(2.0, n), 10.0)
        return max(0.0, sleep * (1 - 0.25 * r))

    @given(retries_taken=st.integers(0, 10**6), r=st.floats(0.0, 1.0, exclude_max=True))
    def test_http_layer_schedule(self, retries_taken, r):
        """Backoff(0.5, 10, factor 0.25).delay(n, r) equals the SDK's delay for n retries taken."""
        backoff = tinker().retry.backoff
        assert self.sdk_delay(retries_taken, r) == backoff.delay(retries_taken, r)

    @given(attempt=st.integers(0, 10**6), r=st.floats(0.0, 1.0, exclude_max=True))
    def test_retry_handler_schedule(self, attempt, r):
        """The RetryHandler preset matches _calculate_retry_delay's symmetric ±25% jitter."""
        delay = min(0.5 * 2**attempt, 10.0) if attempt < 64 else 10.0
        sdk = max(0.0, min(delay + delay * 0.25 * (2 * r - 1), 10.0))
        ours = tinker_retry_handler().retry.backoff.delay(attempt, r)
        assert ours == pytest.approx(sdk, rel=1e-12, abs=1e-12)
