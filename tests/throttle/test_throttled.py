"""Tests for ``@throttled``: SRE adaptive throttling, exact with an injected draw."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading

from collections.abc import Callable

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import ThrottledError, ThrottlePolicy, throttled
from resilience._throttle.state import ThrottleState
from resilience.stores._memory import DEFAULT_STORE
from resilience.testing import FakeClock, capture_events


class Draws:
    """An injected ``rand``: the values given, in order."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0) if self.values else 0.999


def reference(outcomes: list[str], draws: list[float], k: float) -> list[str]:
    """The contract's rule, step by step: what each call should do."""
    requests = accepts = 0
    seen = []
    rand = Draws(draws)
    for outcome in outcomes:
        excess = requests - k * accepts
        probability = max(0.0, excess / (requests + 1))
        if probability > 0 and rand() < probability:
            requests += 1
            seen.append("rejected")
            continue
        seen.append(outcome)
        if outcome == "cancel":
            continue
        requests += 1
        accepts += outcome == "ok"
    return seen


class TestPolicy:
    @pytest.mark.parametrize(
        ("fields", "name"),
        [({"k": 0}, "k"), ({"window": 0}, "window"), ({"rand": 3}, "rand"), ({"on": 3}, "on")],
    )
    def test_bad_fields_name_themselves(self, fields: dict[str, object], name: str) -> None:
        """Each field is checked when the policy is built."""
        with pytest.raises((ValueError, TypeError), match=f"ThrottlePolicy.{name}"):
            ThrottlePolicy(**fields)  # type: ignore[arg-type]

    def test_defaults_and_from_dict(self) -> None:
        """k=2, window=120 s, on=Exception; from_dict takes the field names."""
        assert ThrottlePolicy() == ThrottlePolicy.from_dict({"k": 2.0, "window": 120})
        with pytest.raises(ValueError, match="unknown ThrottlePolicy field"):
            ThrottlePolicy.from_dict({"K": 2})


class TestState:
    def test_probability_formula(self) -> None:
        """10 requests, 2 accepts, k=2: (10 - 4) / 11."""
        state = ThrottleState(2.0, 60.0)
        for n in range(10):
            state.record(1.0, accepted=n < 2)
        assert 6 / 11 == state.probability(1.0)

    def test_counts_slide_out_of_the_window(self) -> None:
        """Counts older than the window no longer weigh."""
        state = ThrottleState(2.0, 10.0)
        for _ in range(5):
            state.record(0.0, accepted=False)
        assert 5 / 6 == state.probability(0.5)
        assert 0.0 == state.probability(10.5)

    @settings(max_examples=80)
    @given(
        st.lists(
            st.tuples(st.floats(min_value=0.0, max_value=4.0), st.booleans(), st.booleans()),
            max_size=80,
        ),
        st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    )
    def test_buckets_match_a_recount(self, steps: list[tuple[float, bool, bool]], k: float) -> None:
        """Counts, rolls and reads in any order agree with recounting every bucket in the window."""
        state = ThrottleState(k, 10.0)  # buckets of one second
        now = 0.0
        history: list[tuple[int, bool]] = []
        for gap, accepted, look in steps:
            now += gap
            if look:
                index = math.floor(now)
                kept = [ok for at, ok in history if at > index - 10]
                requests, accepts = len(kept), sum(kept)
                excess = requests - k * accepts
                assert state.probability(now) == (excess / (requests + 1) if excess > 0 else 0.0)
                assert (requests, accepts) == (state.total_requests, state.total_accepts)
            state.record(now, accepted)
            history.append((math.floor(now), accepted))


def make_call(outcome: list[str], store: object, **fields: object) -> Callable[[], str]:
    @throttled(store=store, **fields)  # type: ignore[arg-type]
    def call() -> str:
        what = outcome[0]
        if what == "fail":
            raise ConnectionError
        if what == "other":
            raise KeyError
        if what == "cancel":
            raise KeyboardInterrupt
        return what

    return call


def drive(call: Callable[[], str], outcomes: list[str], box: list[str]) -> list[str]:
    seen = []
    for outcome in outcomes:
        box[:] = [outcome]
        try:
            call()
            seen.append("ok")
        except ThrottledError:
            seen.append("rejected")
        except ConnectionError:
            seen.append("fail")
        except KeyError:  # not matching on=ConnectionError: an accept
            seen.append("ok")
        except KeyboardInterrupt:
            seen.append("cancel")
    return seen


class TestThrottled:
    def test_the_exact_sequence_with_an_injected_draw(
        self, store: object, clock: FakeClock
    ) -> None:
        """All calls fail: p = (n - 0) / (n + 1) from the second call on; rand decides."""
        box: list[str] = []
        draws = [0.4, 0.7, 0.6, 0.0, 0.9]
        call = make_call(box, store, k=2.0, key="exact", rand=Draws(draws))
        outcomes = ["fail"] * 6
        # before call 1: p=0; 2: 1/2 (draw .4 rejects); 3: 2/3 (.7 admits);
        # 4: 3/4 (.6 rejects); 5: 4/5 (0.0 rejects); 6: 5/6 (.9 admits)
        assert ["fail", "rejected", "fail", "rejected", "rejected", "fail"] == drive(
            call, outcomes, box
        )

    def test_error_carries_the_probability_and_counts(self) -> None:
        """ThrottledError names the key and the probability it drew against."""
        box = ["fail"]
        call = make_call(box, None, key="named", rand=lambda: 0.0)
        with pytest.raises(ConnectionError):
            call()
        with capture_events("resilience.throttle") as events, pytest.raises(ThrottledError) as info:
            call()
        assert ("named", 0.5, 1, 0) == (
            info.value.key,
            info.value.probability,
            info.value.requests,
            info.value.accepts,
        )
        assert "'named'" in str(info.value)
        assert ["resilience.throttle.rejected"] == [event.name for event in events]

    @settings(max_examples=60)
    @given(
        st.lists(st.sampled_from(["ok", "fail", "other", "cancel"]), max_size=60),
        st.lists(st.floats(min_value=0.0, max_value=0.999), max_size=60),
        st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    )
    def test_matches_the_contract_for_any_history(
        self, outcomes: list[str], draws: list[float], k: float
    ) -> None:
        """Exceptions not matching on are accepts; control flow is not counted at all."""
        box: list[str] = []
        call = make_call(box, None, k=k, rand=Draws(draws), on=ConnectionError)
        as_accepts = ["ok" if outcome == "other" else outcome for outcome in outcomes]
        assert reference(as_accepts, draws, k) == drive(call, outcomes, box)

    def test_without_a_key_each_callable_counts_alone(self) -> None:
        """Two keyless throttles: one's failures never throttle the other."""
        box = ["fail"]
        one = make_call(box, None, rand=lambda: 0.0)
        two = make_call(box, None, rand=lambda: 0.0)
        drive(one, ["fail"] * 3, box)
        assert ["fail"] == drive(two, ["fail"], box)

    def test_a_shared_key_shares_counts(self, store: object, clock: FakeClock) -> None:
        """Two throttles with one key: the second sees the first's failures."""
        box: list[str] = []
        one = make_call(box, store, key="both", rand=lambda: 0.0)
        two = make_call(box, store, key="both", rand=lambda: 0.0)
        drive(one, ["fail"], box)
        assert ["rejected"] == drive(two, ["fail"], box)

    def test_counts_expire_with_the_window(self, store: object, clock: FakeClock) -> None:
        """After a window of quiet, the throttle admits again."""
        box: list[str] = []
        call = make_call(box, store, key="expire", window=10.0, rand=lambda: 0.0)
        assert ["fail", "rejected"] == drive(call, ["fail", "fail"], box)
        clock.advance(11.0)
        assert ["ok"] == drive(call, ["ok"], box)

    def test_threads_lose_no_count(self, clock: FakeClock) -> None:
        """Four threads at once, the accepts lock-free: every request and accept counted."""
        fail_every = 10
        calls = 1500

        @throttled(key="throttle-threads", rand=lambda: 0.999)
        def call(n: int) -> int:
            if n % fail_every == 0:
                raise ConnectionError
            return n

        def worker() -> None:
            for n in range(1, calls + 1):
                with contextlib.suppress(ConnectionError):
                    call(n)
                if n == calls // 2:
                    clock.advance(7.0)  # a bucket or more rolls while the others count

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        backend = DEFAULT_STORE.peek("throttle", "throttle-threads")
        assert backend is not None
        _, requests, accepts = backend.probability()
        assert (4 * calls, 4 * (calls - calls // fail_every)) == (requests, accepts)

    def test_bare_decorator_and_generators(self) -> None:
        """Bare @throttled works; generator functions are refused at decoration."""

        @throttled
        def fine() -> int:
            return 1

        assert 1 == fine()
        with pytest.raises(TypeError, match="generator"):

            @throttled()
            def gen() -> object:
                yield 1


@pytest.mark.anyio
class TestThrottledAsync:
    async def test_async_calls_follow_the_same_rule(self, store: object, clock: FakeClock) -> None:
        """An async callable: fails counted, rejection drawn, cancellation not counted."""
        draws = Draws([0.999, 0.0])  # admit the task that is cancelled, then refuse
        inside = asyncio.Event()

        @throttled(key="async", store=store, rand=draws)
        async def call(fail: bool) -> None:
            inside.set()
            await clock.asleep(0.1)
            if fail:
                raise ConnectionError

        with pytest.raises(ConnectionError):
            await call(True)
        inside.clear()
        task = asyncio.create_task(call(False))
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ThrottledError) as info:
            await call(False)
        assert (1, 0) == (info.value.requests, info.value.accepts)
        aclose = getattr(store, "aclose", None)
        if aclose is not None:  # a RedisStore: close this loop's client before the loop ends
            await aclose()
