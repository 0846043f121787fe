"""Tests for ``RetryQuota`` (AWS) and ``RetryThrottle`` (gRPC): exact token counts."""

from __future__ import annotations

import asyncio

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, RetryPolicy, RetryQuota, RetryThrottle, retry
from resilience._budget.quota import MemoryTokenBackend, is_throttling
from resilience.testing import FakeClock


NO_WAIT = Backoff(base=0.0, max=0.0)


class Status(Exception):
    """An error with a status code, and optionally headers carrying Retry-After."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status_code = status
        if headers is not None:
            self.headers = headers


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


class Wrapped(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.response = Response(status)


def failing(budget: object, errors: list[BaseException], attempts: int = 5) -> object:
    """A function that raises the queued errors in turn, then succeeds."""

    @retry(attempts=attempts, backoff=NO_WAIT, budget=budget)  # type: ignore[arg-type]
    def call() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    return call


class TestPolicies:
    @pytest.mark.parametrize(
        ("cls", "fields", "name"),
        [
            (RetryQuota, {"capacity": 0}, "capacity"),
            (RetryQuota, {"retry_cost": -1}, "retry_cost"),
            (RetryQuota, {"throttle_cost": -1}, "throttle_cost"),
            (RetryQuota, {"success_refund": -1}, "success_refund"),
            (RetryQuota, {"key": 3}, "key"),
            (RetryThrottle, {"max_tokens": 0}, "max_tokens"),
            (RetryThrottle, {"token_ratio": 0.0}, "token_ratio"),
            (RetryThrottle, {"token_ratio": 11.0}, "token_ratio"),
        ],
    )
    def test_bad_fields_name_themselves(
        self, cls: type, fields: dict[str, object], name: str
    ) -> None:
        """Each field is checked when built, naming it."""
        with pytest.raises((ValueError, TypeError), match=f"{cls.__name__}.{name}"):
            cls(**fields)

    def test_defaults_are_the_contracts(self) -> None:
        """500/14/5/1 and 10/0.1; from_dict builds them, nested in a RetryPolicy too."""
        assert (500, 14, 5, 1) == (
            RetryQuota().capacity,
            RetryQuota().retry_cost,
            RetryQuota().throttle_cost,
            RetryQuota().success_refund,
        )
        assert (10, 0.1) == (RetryThrottle().max_tokens, RetryThrottle().token_ratio)
        assert RetryQuota(capacity=7) == RetryQuota.from_dict({"capacity": 7})

    def test_retry_policy_takes_them_and_refuses_others(self) -> None:
        """RetryPolicy.budget accepts either; anything else is a TypeError naming it."""
        RetryPolicy(budget=RetryQuota())
        RetryPolicy(budget=RetryThrottle())
        with pytest.raises(TypeError, match="RetryQuota, RetryThrottle"):
            RetryPolicy(budget=3)  # type: ignore[arg-type]


class TestThrottlingKind:
    @pytest.mark.parametrize(
        ("outcome", "expected"),
        [
            (Status(429), True),
            (Wrapped(429), True),
            (Response(429), True),
            (Status(503), False),
            (ValueError(), False),
            (None, False),
        ],
    )
    def test_429_on_the_error_its_response_or_a_result(
        self, outcome: object, expected: bool
    ) -> None:
        """status_code or status, on the exception, its response, or a returned response."""
        assert expected == is_throttling(outcome)


class TestRetryQuota:
    def test_ordinary_retries_cost_14_until_the_bucket_is_short(self, store: object) -> None:
        """30 tokens: two retries (14 each) leave 2; the third is refused with a note."""
        quota = RetryQuota(capacity=30, key="q-ordinary", store=store)
        errors: list[BaseException] = [ConnectionError() for _ in range(5)]
        call = failing(quota, errors)
        with pytest.raises(ConnectionError) as info:
            call()  # type: ignore[operator]
        assert 2 == quota.tokens()
        assert 2 == len(errors)  # one call and two retries
        assert any("quota is empty" in note for note in info.value.__notes__)

    def test_throttling_failures_cost_5(self, clock: FakeClock) -> None:
        """A 429, or any failure with a server delay, costs throttle_cost; Retry-After 0 not."""
        quota = RetryQuota(capacity=100)
        errors: list[BaseException] = [
            Status(429),
            Status(503, {"Retry-After": "2"}),
            Status(503, {"Retry-After": "0"}),
        ]
        call = failing(quota, errors)
        assert "ok" == call()  # type: ignore[operator]
        # 100 - 5 - 5 - 14 = 76, then the success gives back the last retry's 14
        assert 90 == quota.tokens()

    def test_first_attempt_success_refunds_but_never_above_capacity(self) -> None:
        """A first-attempt success adds success_refund, capped at capacity."""
        quota = RetryQuota(capacity=20, success_refund=3)
        call = failing(quota, [ConnectionError()])
        assert "ok" == call()  # type: ignore[operator]
        assert 20 == quota.tokens()  # 20 - 14 + 14
        failing(quota, [ConnectionError(), ConnectionError()], attempts=2)
        with pytest.raises(ConnectionError):
            failing(quota, [ConnectionError(), ConnectionError()], attempts=2)()  # type: ignore[operator]
        assert 6 == quota.tokens()  # gave up after one retry: no refund
        for _ in range(2):
            failing(quota, [])()  # type: ignore[operator]
        assert 12 == quota.tokens()
        for _ in range(5):
            failing(quota, [])()  # type: ignore[operator]
        assert 20 == quota.tokens()

    def test_keyless_quota_is_shared_by_the_object(self) -> None:
        """Two policies holding one keyless quota draw on one bucket."""
        quota = RetryQuota(capacity=28)
        with pytest.raises(ConnectionError):
            failing(quota, [ConnectionError()], attempts=1)()  # type: ignore[operator]
        failing(quota, [ConnectionError()])()  # type: ignore[operator]
        failing(quota, [ConnectionError()])()  # type: ignore[operator]
        assert 28 == quota.tokens()
        other = RetryQuota(capacity=28)
        assert 28 == other.tokens()

    def test_keyed_quotas_share_a_bucket(self, store: object) -> None:
        """Two quota objects with one key on one store share tokens."""
        one = RetryQuota(capacity=30, key="q-shared", store=store)
        two = RetryQuota(capacity=30, key="q-shared", store=store)
        with pytest.raises(ConnectionError):
            failing(one, [ConnectionError()] * 2, attempts=2)()  # type: ignore[operator]
        assert 16 == two.tokens()

    @pytest.mark.anyio
    async def test_async_calls_are_priced_and_refunded(self, clock: FakeClock) -> None:
        """The same rule for coroutine functions: the ticket follows the task."""
        quota = RetryQuota(capacity=50)
        errors: list[BaseException] = [Status(429), ConnectionError()]

        @retry(attempts=5, backoff=NO_WAIT, budget=quota)
        async def call() -> str:
            await asyncio.sleep(0)
            if errors:
                raise errors.pop(0)
            return "ok"

        assert "ok" == await call()
        assert 45 == quota.tokens()  # 50 - 5 - 14 + 14


@pytest.mark.anyio
class TestAsyncStores:
    async def test_async_quota_and_throttle_on_any_store(self, store: object) -> None:
        """Async retries price and refund through the store's async client too."""
        quota = RetryQuota(capacity=50, key="q-async", store=store)
        throttle = RetryThrottle(key="t-async", store=store)
        errors: list[BaseException] = [Status(429), ConnectionError()]

        @retry(attempts=5, backoff=NO_WAIT, budget=quota)
        async def priced() -> str:
            if errors:
                raise errors.pop(0)
            return "ok"

        @retry(attempts=3, backoff=NO_WAIT, budget=throttle)
        async def throttled_call() -> None:
            raise ConnectionError

        assert "ok" == await priced()
        with pytest.raises(ConnectionError):
            await throttled_call()
        assert 45 == quota.tokens()  # 50 - 5 - 14 + 14
        assert 7.0 == throttle.tokens()  # three failed attempts
        aclose = getattr(store, "aclose", None)
        if aclose is not None:
            await aclose()


class TestRetryThrottle:
    def test_the_grpc_sequence(self, store: object) -> None:
        """10 tokens: attempts fail until the level is not above 5; successes add 0.1."""
        throttle = RetryThrottle(key="t-grpc", store=store)
        errors: list[BaseException] = [ConnectionError() for _ in range(20)]
        with pytest.raises(ConnectionError):
            failing(throttle, errors, attempts=10)()  # type: ignore[operator]
        assert 15 == len(errors)  # 9, 8, 7, 6 allow a retry; at 5 it stops
        assert 5.0 == throttle.tokens()
        with pytest.raises(ConnectionError):
            failing(throttle, errors, attempts=10)()  # type: ignore[operator]
        assert 4.0 == throttle.tokens()
        errors.clear()
        for _ in range(10):
            failing(throttle, errors)()  # type: ignore[operator]
        assert 5.0 == throttle.tokens()  # exactly: tokens are kept in thousandths

    def test_non_retryable_failures_take_nothing(self) -> None:
        """An exception outside ``on`` is neither a retryable failure nor a success."""
        throttle = RetryThrottle()

        @retry(attempts=3, backoff=NO_WAIT, on=ConnectionError, budget=throttle)
        def call() -> None:
            raise KeyError

        with pytest.raises(KeyError):
            call()
        assert 10.0 == throttle.tokens()

    def test_the_last_failed_attempt_takes_its_token(self) -> None:
        """Giving up on the attempt limit still charges that attempt, once."""
        throttle = RetryThrottle()
        with pytest.raises(ConnectionError):
            failing(throttle, [ConnectionError()] * 3, attempts=2)()  # type: ignore[operator]
        assert 8.0 == throttle.tokens()  # the same exception object raised twice: two tokens


class TestTokenBackend:
    @given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))))
    def test_never_leaves_zero_to_capacity(self, steps: list[tuple[int, int, int]]) -> None:
        """Whatever the steps, the tokens stay in [0, capacity] and a take needs *need*."""
        backend = MemoryTokenBackend(30)
        for take, need, give in steps:
            before = backend.tokens
            ok, after = backend.step(take, need, give)
            assert 0 <= after <= 30
            assert ok == (take == 0 or before >= need)
