"""presets.tinker(): the Tinker SDK's schedule and header rules, against a loopback server."""

from __future__ import annotations

import httpx
import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, layers_of
from resilience.presets import anthropic, openai, tinker, tinker_delay, tinker_retry_handler

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


class TestTinkerFixes:
    def test_2xx_with_should_retry_true_is_returned(self, base, clock):
        """The SDK returns a 2xx whatever x-should-retry says (it only raises on 4xx/5xx)."""

        @tinker()
        def get(client):
            return client.get(f"{base}/status/200?x-should-retry=true")

        with httpx.Client() as client:
            assert 200 == get(client).status_code
        assert [] == clock.sleeps

    def test_each_preset_has_its_own_pool(self):
        """Unrelated clients never share a pool by accident; a key shares one on purpose."""
        assert tinker().bounded.key != tinker().bounded.key
        assert "shared" == tinker(key="shared").bounded.key == tinker(key="shared").bounded.key
        assert openai().bounded.key != anthropic().bounded.key

    def test_bad_max_retries(self):
        """max_retries must be a whole number >= 0, named in the error."""
        with pytest.raises(ValueError, match="max_retries"):
            openai(max_retries=-1)

    def test_retry_handler_retries_tinker_connection_errors(self, clock):
        """tinker's APIConnectionError, APITimeoutError and RetryableException are retried."""
        import tinker as sdk

        from tinker.lib.retryable_exception import RetryableException

        request = httpx.Request("GET", "http://127.0.0.1:9/")
        errors = [
            sdk.APIConnectionError(request=request),
            sdk.APITimeoutError(request=request),
            RetryableException("again"),
        ]
        calls = []

        @tinker_retry_handler()
        def flaky():
            calls.append(1)
            if errors:
                raise errors.pop(0)
            return "done"

        assert "done" == flaky()
        assert 4 == len(calls)

    def test_pool_scope_call_holds_the_permit_across_retries(self):
        """pool_scope="call" puts the pool outside the retry, as the SDK's semaphore."""
        per_attempt = tinker_retry_handler()
        whole_call = tinker_retry_handler(pool_scope="call")
        assert ["retry", "bounded"] == [x.decorator for x in layers_of(per_attempt(lambda: 1))]
        assert ["bounded", "retry"] == [x.decorator for x in layers_of(whole_call(lambda: 1))]
        with pytest.raises(ValueError, match="pool_scope"):
            tinker_retry_handler(pool_scope="loop")  # type: ignore[arg-type]


class TestWatchdog:
    @pytest.mark.anyio
    async def test_hung_call_is_cancelled(self, clock):
        """An async call hung past progress_timeout is cancelled: NoProgressError."""
        import asyncio

        from resilience.presets import NoProgressError

        cancelled = []

        @tinker_retry_handler(progress_timeout=30.0)
        async def hung():
            try:
                await clock.asleep(10_000)
            except asyncio.CancelledError:
                cancelled.append(clock.monotonic())
                raise

        with pytest.raises(NoProgressError, match="No progress made in 30s"):
            await hung()
        assert [30.0] == cancelled

    @pytest.mark.anyio
    async def test_progress_anywhere_keeps_everyone_alive(self, clock):
        """A success of any call resets the watchdog for all, as the SDK's global progress."""
        import asyncio

        @tinker_retry_handler(progress_timeout=30.0)
        async def work(seconds):
            await clock.asleep(seconds)
            return seconds

        # 20 s calls keep succeeding, so the 50 s call is never 30 s without progress
        results = await asyncio.gather(work(50.0), work(20.0), *(work(20.0 * k) for k in (2,)))
        assert [50.0, 20.0, 40.0] == results

    def test_sync_calls_have_no_watchdog(self):
        """Sync calls cannot be interrupted: the stack alone (the retry's progress_timeout)."""
        decorated = tinker_retry_handler()(lambda: 1)
        assert 1 == decorated()


class TestWatchdogTargets:
    @pytest.mark.anyio
    async def test_async_method_is_watched(self, clock):
        """An async method gets the watchdog too; its object is passed through."""
        from resilience.presets import NoProgressError

        class Client:
            @tinker_retry_handler(progress_timeout=5.0)
            async def hang(self):
                await clock.asleep(100.0)

        with pytest.raises(NoProgressError):
            await Client().hang()
        assert 5.0 == clock.monotonic()

    def test_classmethods_get_the_stack_alone(self):
        """A classmethod is decorated (its layers are there) without a watchdog wrapper."""

        class Client:
            @tinker_retry_handler()
            @classmethod
            async def make(cls):
                return cls

        assert 2 == len(layers_of(vars(Client)["make"]))
