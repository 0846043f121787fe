"""The retry core: pure decisions fed with (outcome, now), and the budget as a step of its own."""

from __future__ import annotations

import math

import pytest

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, RetryBudget, RetryPolicy, retry
from resilience._retry.core import WITHDRAW, RetryCall, Rules
from resilience.testing import FakeClock


NO_WAIT = Backoff(base=0)


class Throttled(Exception):
    """A failure whose server says when to come back (a 429 with Retry-After)."""

    def __init__(self, after: float) -> None:
        super().__init__(f"429, retry after {after}")
        self.headers = {"Retry-After": str(after)}


def call_for(**fields: object) -> RetryCall:
    return RetryCall(Rules(RetryPolicy(**fields)), started=0.0)  # type: ignore[arg-type]


class TestDecisions:
    def test_answers_a_wait_until_the_attempts_are_spent(self) -> None:
        """next_delay answers the backoff's wait, then None with the reason once the limit is hit."""
        call = call_for(attempts=3, backoff=Backoff(base=0.5, jitter="none"))
        assert [0.5, 1.0, None] == [call.next_delay(ValueError(), 0.0) for _ in range(3)]
        assert "the limit of 3 attempt(s) was reached" == call.reason
        assert 3 == call.attempt

    def test_a_budget_is_asked_first(self) -> None:
        """With a budget the answer is WITHDRAW; granted() turns the budget's answer into a wait."""
        call = call_for(attempts=5, backoff=Backoff(base=0.25, jitter="none"), budget=RetryBudget())
        assert WITHDRAW is call.next_delay(ValueError(), 0.0)
        assert 1 == call.attempt  # nothing counted before the budget answers
        assert 0.25 == call.granted(True)
        assert 2 == call.attempt
        assert WITHDRAW is call.next_delay(ValueError(), 1.0)
        assert call.granted(False) is None
        assert call.reason.startswith("the retry budget is spent (at most 0.1 retries per call")
        assert 2 == call.attempt

    def test_the_timeout_is_checked_before_the_budget(self) -> None:
        """A wait that would cross the timeout gives up without touching the budget."""
        call = call_for(backoff=Backoff(base=2.0, jitter="none"), timeout=1.0, budget=RetryBudget())
        assert call.next_delay(ValueError(), 0.0) is None
        assert "the next wait of 2.000 s would cross the timeout of 1 s" == call.reason

    def test_server_delay_is_known_before_withdrawing(self) -> None:
        """The withdrawal step can tell a server-paced failure (a 429) from a plain one."""
        call = call_for(budget=RetryBudget(), backoff=NO_WAIT)
        assert WITHDRAW is call.next_delay(Throttled(3.0), 0.0)
        assert call.server_delay
        assert 3.0 == call.granted(True)
        assert WITHDRAW is call.next_delay(ValueError(), 3.0)
        assert not call.server_delay

    @given(
        timeout=st.floats(0.001, 1e6),
        elapsed=st.floats(0.0, 1e6),
    )
    def test_time_left_is_the_timeout_less_the_elapsed_time(
        self, timeout: float, elapsed: float
    ) -> None:
        """time_left: the one place a limit on time is read; None without one."""
        call = call_for(timeout=timeout)
        assert (timeout - elapsed, f"the timeout of {timeout:g} s") == call.time_left(elapsed)
        assert call_for().time_left(elapsed) is None

    def test_pure(self) -> None:
        """The same outcomes and times give the same answers: no clock, no store, no I/O."""
        budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0)  # 10 retries per window
        answers = []
        for _ in range(2):
            call = call_for(attempts=4, backoff=NO_WAIT, budget=budget, timeout=10.0)
            answers.append([call.next_delay(ValueError(), t) for t in (0.0, 1.0)])
        assert [[WITHDRAW, WITHDRAW]] * 2 == answers
        assert 10.0 == budget.balance()  # the core never withdrew: the drivers do


class Recording(RetryBudget):
    """A budget that records what each withdrawal was told (a quota would weigh it)."""

    seen: list[tuple[str, object, bool]] = []

    def try_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        Recording.seen.append(("sync", type(outcome).__name__, server_delay))
        return super().try_retry(outcome, server_delay)

    async def atry_retry(self, outcome: object = None, server_delay: bool = False) -> bool:
        Recording.seen.append(("async", type(outcome).__name__, server_delay))
        return await super().atry_retry(outcome, server_delay)


class TestWithdrawalStep:
    def test_sync_calls_withdraw_with_the_kind_of_failure(self, clock: FakeClock) -> None:
        Recording.seen = []
        failures = [Throttled(0.5), ValueError("plain")]

        @retry(attempts=3, backoff=NO_WAIT, budget=Recording())
        def flaky() -> str:
            if failures:
                raise failures.pop(0)
            return "ok"

        assert "ok" == flaky()
        assert [("sync", "Throttled", True), ("sync", "ValueError", False)] == Recording.seen
        assert 0.5 == clock.monotonic()  # the server's wait was kept

    @pytest.mark.anyio
    async def test_async_kinds_await_the_async_withdrawal(self, clock: FakeClock) -> None:
        """Coroutines and async generators withdraw through atry_retry, never try_retry."""
        Recording.seen = []
        budget = Recording()
        failures = [ValueError("a"), Throttled(1.0), KeyError("b")]

        @retry(attempts=5, backoff=NO_WAIT, budget=budget)
        async def flaky() -> str:
            if len(failures) > 1:
                raise failures.pop(0)
            return "ok"

        @retry(attempts=5, backoff=NO_WAIT, budget=budget)
        async def stream():  # type: ignore[no-untyped-def]
            if failures:
                raise failures.pop(0)
            yield 1
            yield 2

        assert "ok" == await flaky()
        assert [1, 2] == [item async for item in stream()]
        assert [
            ("async", "ValueError", False),
            ("async", "Throttled", True),
            ("async", "KeyError", False),
        ] == Recording.seen

    def test_generators_withdraw_too(self, clock: FakeClock) -> None:
        Recording.seen = []
        failures = [ValueError("once")]

        @retry(attempts=3, backoff=NO_WAIT, budget=Recording())
        def stream():  # type: ignore[no-untyped-def]
            if failures:
                raise failures.pop(0)
            yield from range(3)

        assert [0, 1, 2] == list(stream())
        assert [("sync", "ValueError", False)] == Recording.seen

    def test_rules_read_the_policy_once(self) -> None:
        """Rules hold the constants: attempts=None is an infinite limit, base 0 is `zero`."""
        rules = Rules(RetryPolicy(attempts=None, backoff=NO_WAIT))
        assert (math.inf, True, None, None) == (
            rules.limit,
            rules.zero,
            rules.budget,
            rules.last_success,
        )
        assert Rules(RetryPolicy(progress_timeout=5.0)).last_success is not None
