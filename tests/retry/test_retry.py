"""@retry: attempts, waits, deadlines, shared progress, delay hooks and every callable kind."""

from __future__ import annotations

import asyncio
import math
import threading
import traceback

from dataclasses import dataclass, field

import pytest

from freezegun import freeze_time

from resilience import AttemptTimeoutError, Backoff, RetryPolicy, retry, set_active
from resilience.testing import FakeClock, capture_events, set_testing, virtual_time


NO_JITTER = Backoff(jitter="none")


class Boom(Exception):
    pass


@dataclass
class Flaky:
    """Fails *failures* times with *exc*, then returns *value*."""

    failures: int
    exc: type[BaseException] = Boom
    value: object = "ok"
    calls: int = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return self.value


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class HTTPError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class TestSync:
    def test_success_needs_no_wait(self, clock):
        """A call that succeeds at once runs once and never sleeps."""
        f = retry(Flaky(0))
        assert "ok" == f()
        assert [] == clock.sleeps

    def test_retries_until_success_with_backoff(self, clock):
        """Failures are retried after the backoff's delays."""
        flaky = Flaky(2)
        assert "ok" == retry(backoff=NO_JITTER)(flaky)()
        assert 3 == flaky.calls
        assert [0.5, 1.0] == clock.sleeps

    def test_gives_up_with_the_original_exception(self, clock):
        """On giving up, the last exception itself is re-raised, with a note."""
        raised = []

        def always():
            err = Boom(len(raised))
            raised.append(err)
            raise err

        with pytest.raises(Boom) as info:
            retry(attempts=3, backoff=NO_JITTER)(always)()
        assert raised[-1] is info.value
        assert 3 == len(raised)
        note = info.value.__notes__[-1]
        assert "gave up on" in note
        assert "after 3 attempt(s) in 1.500 s" in note
        assert "limit of 3 attempt(s)" in note
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "always" == frames[-1]

    def test_other_exceptions_propagate_at_once(self, clock):
        """Exceptions that do not match `on` are not retried."""
        flaky = Flaky(5, exc=KeyError)
        with pytest.raises(KeyError):
            retry(on=Boom)(flaky)()
        assert (1, []) == (flaky.calls, clock.sleeps)

    @pytest.mark.parametrize(
        "on",
        [Boom, (KeyError, Boom), lambda exc: "failure" in str(exc)],
        ids=["class", "tuple", "predicate"],
    )
    def test_on_spellings(self, clock, on):
        """on= may be a class, a tuple or a predicate."""
        assert "ok" == retry(on=on)(Flaky(2))()

    def test_base_exceptions_are_never_retried(self, clock):
        """KeyboardInterrupt and friends pass straight through."""
        flaky = Flaky(1, exc=KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            retry(on=BaseException)(flaky)()
        assert 1 == flaky.calls

    def test_unbounded_attempts(self, clock):
        """attempts=None keeps retrying until success."""
        flaky = Flaky(50)
        assert "ok" == retry(attempts=None, backoff=Backoff(base=0))(flaky)()
        assert 51 == flaky.calls

    def test_zero_backoff_never_sleeps(self, clock):
        """A zero delay skips sleeping entirely (no sleep(0) calls)."""
        retry(backoff=Backoff(base=0))(Flaky(3))()
        assert [] == clock.sleeps

    def test_decorrelated_schedule(self, clock):
        """A decorrelated backoff drives the loop, each delay within its bounds."""
        b = Backoff(strategy="decorrelated", base=1, max=50)
        retry(attempts=8, backoff=b)(Flaky(7))()
        assert 7 == len(clock.sleeps)
        assert all(b.bounds(n)[0] <= d <= b.bounds(n)[1] for n, d in enumerate(clock.sleeps))


class TestOnResult:
    def test_retries_on_result(self, clock):
        """A result for which on_result is true is retried."""
        results = iter([Response(503), Response(503), Response(200)])
        f = retry(on_result=lambda r: r.status >= 500, backoff=NO_JITTER)(lambda: next(results))
        assert 200 == f().status
        assert [0.5, 1.0] == clock.sleeps

    def test_gives_up_returning_last_result(self, clock):
        """When attempts run out on results, the last result is returned, not raised."""
        responses = [Response(503), Response(502)]
        f = retry(attempts=2, on_result=lambda r: r.status >= 500)(lambda: responses.pop(0))
        assert 502 == f().status


class TestDelayHook:
    def test_server_delay_replaces_backoff(self, clock):
        """Retry-After on the exception's response replaces the backoff for that wait."""
        errors = [HTTPError(Response(429, {"Retry-After": "7"})), HTTPError(Response(503))]

        def call():
            if errors:
                raise errors.pop(0)
            return "ok"

        assert "ok" == retry(backoff=NO_JITTER)(call)()
        assert [7.0, 1.0] == clock.sleeps

    def test_server_delay_capped(self, clock):
        """A server delay is capped at retry_after_cap."""
        errors = [HTTPError(Response(429, {"retry-after-ms": "900000"}))]

        def call():
            if errors:
                raise errors.pop(0)

        retry(retry_after_cap=30)(call)()
        assert [30.0] == clock.sleeps

    @pytest.mark.parametrize("server", [0, 0.0, None, -3, math.nan, math.inf])
    def test_zero_or_invalid_server_delay_uses_backoff(self, clock, server):
        """A hook answering 0, None or nonsense falls back to the backoff (no hot loop)."""
        retry(delay_hook=lambda _: server, backoff=NO_JITTER)(Flaky(1))()
        assert [0.5] == clock.sleeps

    def test_raising_hook_uses_backoff(self, clock):
        """A broken hook does not replace the caller's error; the backoff applies."""

        def hook(outcome):
            raise RuntimeError("bug in hook")

        retry(delay_hook=hook, backoff=NO_JITTER)(Flaky(1))()
        assert [0.5] == clock.sleeps

    def test_hook_sees_results(self, clock):
        """The hook receives returned values too (e.g. a 429 response object)."""
        results = [Response(429, {"retry-after": "2"}), Response(200)]
        f = retry(on_result=lambda r: r.status == 429)(lambda: results.pop(0))
        assert 200 == f().status
        assert [2.0] == clock.sleeps

    def test_http_date_with_freezegun(self):
        """An HTTP-date Retry-After is read against the (frozen) wall clock."""
        with (
            freeze_time("2026-11-25 12:00:00") as frozen,
            virtual_time(FakeClock(tick=frozen.tick)) as clock,
        ):
            errors = [HTTPError(Response(503, {"Retry-After": "Wed, 25 Nov 2026 12:00:05 GMT"}))]

            def call():
                if errors:
                    raise errors.pop(0)
                return "ok"

            assert "ok" == retry(call)()
        assert [5.0] == clock.sleeps


class TestDeadlines:
    def test_timeout_never_sleeps_past_deadline(self, clock):
        """The next wait that would cross timeout makes it give up at once."""
        flaky = Flaky(100)
        with pytest.raises(Boom) as info:
            retry(attempts=None, timeout=5, backoff=NO_JITTER)(flaky)()
        # 0.5 + 1 + 2 = 3.5; the next wait (4) would end at 7.5 > 5
        assert [0.5, 1.0, 2.0] == clock.sleeps
        assert 4 == flaky.calls
        assert "would cross the timeout of 5 s" in info.value.__notes__[-1]

    def test_timeout_counts_from_first_call_start(self, clock):
        """Time spent inside the first call counts against the timeout."""

        def slow_fail():
            clock.sleep(4.8)
            raise Boom

        with pytest.raises(Boom):
            retry(timeout=5, backoff=NO_JITTER)(slow_fail)()
        assert [4.8] == clock.sleeps  # the 0.5 s wait would end at 5.3

    def test_progress_timeout_single_caller(self, clock):
        """Alone, a caller gives up once no call has succeeded for progress_timeout."""
        flaky = Flaky(100)
        with pytest.raises(Boom) as info:
            retry(
                attempts=None,
                progress_timeout=3,
                backoff=Backoff(base=1, jitter="none", strategy="constant"),
            )(flaky)()
        assert 4 == flaky.calls
        assert "progress_timeout 3 s" in info.value.__notes__[-1]

    @pytest.mark.anyio
    async def test_progress_is_shared_by_concurrent_calls(self):
        """One success anywhere resets the progress clock for every retrying call."""
        with virtual_time() as clock:
            state = {"healthy_until": 20.0}

            @retry(
                attempts=None,
                progress_timeout=5,
                backoff=Backoff(base=1, strategy="constant", jitter="none"),
            )
            async def op(kind: str) -> str:
                if kind == "stuck" or clock.monotonic() > state["healthy_until"]:
                    raise Boom(kind)
                return kind

            successes: list[float] = []

            async def steady() -> None:
                while clock.monotonic() < state["healthy_until"]:
                    await op("ok")
                    successes.append(clock.monotonic())
                    await clock.asleep(2)

            helper = asyncio.create_task(steady())
            with pytest.raises(Boom):
                await op("stuck")
            await helper
            # progress kept the stuck call alive while the healthy caller succeeded (until
            # t=18); then 5 s without any success ended it
            assert 18.0 == successes[-1]
            assert 23.0 == clock.monotonic()

    def test_progress_with_threads(self):
        """Threads share progress: successes in one thread keep another's retries alive."""
        go, done = threading.Semaphore(0), threading.Semaphore(0)

        class HandOffClock(FakeClock):
            """Each wait of the stuck thread lets the healthy thread make one call."""

            def sleep(self, seconds):
                super().sleep(seconds)
                go.release()
                assert done.acquire(timeout=5)

        clock = HandOffClock()
        policy = RetryPolicy(
            attempts=None,
            progress_timeout=10,
            backoff=Backoff(base=1, strategy="constant", jitter="none"),
            clock=clock,
        )
        stuck_calls = 0
        healthy_calls = 0

        @retry(policy)
        def op(stuck: bool) -> None:
            nonlocal stuck_calls
            if stuck:
                stuck_calls += 1
                raise Boom

        def healthy():
            nonlocal healthy_calls
            while go.acquire(timeout=5):
                if healthy_calls < 30:
                    op(False)
                    healthy_calls += 1
                done.release()
                if stuck_calls == 0:
                    return

        worker = threading.Thread(target=healthy)
        worker.start()
        with pytest.raises(Boom):
            op(True)
        stuck_calls = 0
        go.release()
        worker.join(5)
        # 30 successes in the other thread kept the stuck call going for 30 s, far past
        # the progress timeout of 10 s; then 10 s without success ended it
        assert 30 == healthy_calls
        assert 40.0 == clock.monotonic()


class TestAsync:
    @pytest.mark.anyio
    async def test_retries_until_success(self, clock):
        """Async callables are retried with async sleeps."""
        flaky = Flaky(2)

        @retry(backoff=NO_JITTER)
        async def op():
            return flaky()

        assert "ok" == await op()
        assert [0.5, 1.0] == clock.sleeps

    @pytest.mark.anyio
    async def test_gives_up(self, clock):
        """The last exception is re-raised with a note."""

        @retry(attempts=2)
        async def op():
            raise Boom("x")

        with pytest.raises(Boom) as info:
            await op()
        assert "after 2 attempt(s)" in info.value.__notes__[-1]

    @pytest.mark.anyio
    async def test_on_result_and_timeout(self, clock):
        """on_result and timeout work on async callables."""

        @retry(attempts=None, timeout=2, on_result=lambda r: r is None, backoff=NO_JITTER)
        async def op():
            return None

        assert None is await op()
        assert [0.5, 1.0] == clock.sleeps

    @pytest.mark.anyio
    async def test_cancellation_is_not_retried(self, clock):
        """A cancelled attempt propagates CancelledError at once."""
        calls = 0

        @retry(on=BaseException)
        async def op():
            nonlocal calls
            calls += 1
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await op()
        assert 1 == calls

    @pytest.mark.anyio
    async def test_attempt_timeout_cancels_stalled_attempts(self):
        """A stalled attempt is cancelled after attempt_timeout and retried."""
        calls = 0
        never = asyncio.Event()

        @retry(attempt_timeout=0.005, backoff=Backoff(base=0), on=KeyError)
        async def op():
            nonlocal calls
            calls += 1
            if calls < 3:
                await never.wait()
            return calls

        assert 3 == await op()

    @pytest.mark.anyio
    async def test_attempt_timeout_gives_up_with_its_error(self):
        """When every attempt stalls, the AttemptTimeoutError (a TimeoutError) propagates."""

        @retry(attempts=2, attempt_timeout=0.002, backoff=Backoff(base=0))
        async def op():
            await asyncio.Event().wait()

        with pytest.raises(AttemptTimeoutError) as info:
            await op()
        assert isinstance(info.value, TimeoutError)
        assert "took longer than 0.002 s" in str(info.value)

    @pytest.mark.anyio
    async def test_own_timeout_errors_are_not_attempt_timeouts(self):
        """A TimeoutError raised by the callable itself stays the callable's."""

        @retry(attempts=1, attempt_timeout=10)
        async def op():
            raise TimeoutError("mine")

        with pytest.raises(TimeoutError, match="mine"):
            await op()

    def test_attempt_timeout_on_sync_is_refused(self):
        """attempt_timeout on a sync callable fails at decoration, saying why."""
        with pytest.raises(TypeError, match="attempt_timeout=.*needs an async callable"):

            @retry(attempt_timeout=1)
            def op():
                pass


class TestGenerators:
    def test_failure_before_first_item_is_retried(self, clock):
        """A generator failing before its first item starts over."""
        runs = []

        @retry(backoff=NO_JITTER)
        def numbers():
            runs.append(1)
            if len(runs) < 3:
                raise Boom
            yield from (1, 2, 3)
            return "done"

        gen = numbers()
        assert [] == runs  # lazy, like any generator
        assert [1, 2, 3] == list(gen)
        assert 3 == len(runs)
        assert [0.5, 1.0] == clock.sleeps

    def test_failure_after_an_item_is_not_retried(self, clock):
        """Once an item went out, a failure propagates with a note saying why."""

        @retry
        def numbers():
            yield 1
            raise Boom("late")

        gen = numbers()
        assert 1 == next(gen)
        with pytest.raises(Boom) as info:
            next(gen)
        assert "not retried" in info.value.__notes__[-1]
        assert [] == clock.sleeps

    def test_send_throw_close_pass_through(self, clock):
        """send(), throw() and close() reach the generator, and its return value comes back."""
        seen = []
        closed = []

        @retry
        def echo():
            try:
                while True:
                    try:
                        got = yield len(seen)
                    except KeyError:
                        got = "thrown"
                    seen.append(got)
                    if got == "stop":
                        return "bye"
            finally:
                closed.append(True)

        gen = echo()
        assert 0 == next(gen)
        assert 1 == gen.send("a")
        assert 2 == gen.throw(KeyError())
        with pytest.raises(StopIteration) as stop:
            gen.send("stop")
        assert "bye" == stop.value.value
        assert ["a", "thrown", "stop"] == seen
        gen2 = echo()
        next(gen2)
        gen2.close()
        assert [True, True] == closed

    @pytest.mark.anyio
    async def test_async_generator(self, clock):
        """Async generators are retried before their first item and passed through after."""
        runs = []

        @retry(backoff=NO_JITTER)
        async def numbers():
            runs.append(1)
            if len(runs) < 2:
                raise Boom
            for i in range(3):
                yield i

        assert [0, 1, 2] == [i async for i in numbers()]
        assert [0.5] == clock.sleeps

    @pytest.mark.anyio
    async def test_async_generator_late_failure(self, clock):
        """A failure after the first async item is not retried and says so."""

        @retry
        async def numbers():
            yield 1
            raise Boom

        agen = numbers()
        assert 1 == await agen.__anext__()
        with pytest.raises(Boom) as info:
            await agen.__anext__()
        assert "not retried" in info.value.__notes__[-1]

    @pytest.mark.anyio
    async def test_async_generator_asend_athrow(self, clock):
        """asend and athrow are forwarded."""

        @retry
        async def echo():
            got = None
            while True:
                try:
                    got = yield got
                except KeyError:
                    got = "thrown"

        agen = echo()
        assert None is await agen.__anext__()
        assert "x" == await agen.asend("x")
        assert "thrown" == await agen.athrow(KeyError())
        await agen.aclose()

    def test_on_result_refused_for_generators(self):
        """on_result has no meaning for generators and is refused at decoration."""
        with pytest.raises(TypeError, match="on_result"):

            @retry(on_result=bool)
            def gen():
                yield 1


class TestSwitches:
    def test_testing_mode_caps_attempts_and_skips_waits(self, clock):
        """set_testing(True, attempts=2) makes at most 2 calls and never waits."""
        flaky = Flaky(5)
        with set_testing(True, attempts=2), pytest.raises(Boom):
            retry(attempts=10)(flaky)()
        assert (2, []) == (flaky.calls, clock.sleeps)

    def test_testing_mode_restores(self):
        """Leaving the context restores the previous mode."""
        from resilience.testing import is_testing

        with set_testing(True):
            assert is_testing()
        assert not is_testing()

    def test_testing_mode_attempts_none_keeps_policy_limit(self, clock):
        """attempts=None in testing mode keeps the policy's own limit but still skips waits."""
        flaky = Flaky(2)
        with set_testing(True, attempts=None):
            assert "ok" == retry(attempts=3)(flaky)()
        assert [] == clock.sleeps

    def test_set_testing_validates(self):
        """A bad attempts cap names the accepted range."""
        with pytest.raises(ValueError, match="attempts must be a whole number >= 1"):
            set_testing(True, attempts=0)

    def test_switched_off_calls_once(self, clock):
        """set_active(False) turns retrying off: one call, the error propagates."""
        flaky = Flaky(1)
        set_active(False)
        with pytest.raises(Boom) as info:
            retry(flaky)()
        assert 1 == flaky.calls
        assert "switched off" in info.value.__notes__[-1]


class TestEvents:
    def test_retry_and_give_up_events(self, clock):
        """Each retry emits its delay and attempt; giving up emits the reason."""
        with capture_events("resilience.retry") as events, pytest.raises(Boom):
            retry(attempts=3, backoff=NO_JITTER, name="fetch")(Flaky(5))()
        retries = [e for e in events if e.name == "resilience.retry.retry"]
        assert [0.5, 1.0] == [e.measurements["delay"] for e in retries]
        assert [1, 2] == [e.measurements["attempt"] for e in retries]
        assert {"fetch"} == {e.metadata["name"] for e in events}
        give_up = [e for e in events if e.name == "resilience.retry.give_up"]
        assert 1 == len(give_up)
        assert 3 == give_up[0].measurements["attempts"]

    def test_server_delay_flag(self, clock):
        """The retry event says when the delay came from the server."""
        errors = [HTTPError(Response(429, {"retry-after": "3"}))]

        def call():
            if errors:
                raise errors.pop(0)

        with capture_events("resilience.retry.retry") as events:
            retry(call)()
        assert [(3.0, True)] == [
            (e.measurements["delay"], e.metadata["server_delay"]) for e in events
        ]

    def test_recovered_event(self, clock):
        """A call that succeeds after retries emits a recovered event."""
        with capture_events("resilience.retry.recovered") as events:
            retry(Flaky(1))()
        assert [2] == [e.measurements["attempts"] for e in events]

    def test_raising_handler_is_detached(self, clock):
        """A handler that raises never breaks the call, and is detached."""
        from resilience.telemetry import attach

        calls = []

        def bad(event):
            calls.append(event)
            raise RuntimeError("handler bug")

        attach(bad)
        assert "ok" == retry(Flaky(2))()
        assert 1 == len(calls)


class TestOwnRefusals:
    def test_hand_stacked_retry_waits_out_open_breaker(self, clock):
        """@retry over @circuit_breaker waits the breaker's retry_after, not the backoff."""
        from resilience import circuit_breaker

        answers = [ConnectionError("blip"), "ok"]

        @retry(attempts=3, backoff=NO_JITTER)
        @circuit_breaker(name="hand-stacked", failure_threshold=1, reset_timeout=5)
        def call():
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        assert "ok" == call()
        assert [0.5, 4.5] == clock.sleeps

    def test_fallback_not_used_when_switched_off(self, clock):
        """set_active(False) means as if undecorated: no fallback either."""
        set_active(False)
        with pytest.raises(Boom):
            retry(attempts=3, fallback="fallback")(Flaky(5))()


class TestGeneratorEdges:
    def test_empty_generator_returns_its_value(self, clock):
        """A generator that ends at once returns its value, no retry."""

        @retry
        def empty():
            return "done"
            yield  # pragma: no cover - makes this a generator

        with pytest.raises(StopIteration) as stop:
            next(empty())
        assert "done" == stop.value.value

    def test_generator_gives_up_with_note_and_events(self, clock):
        """A generator failing before every first item gives up like a function."""

        @retry(attempts=2, backoff=NO_JITTER)
        def broken():
            raise Boom("never")
            yield  # pragma: no cover

        with capture_events("resilience.retry") as events, pytest.raises(Boom) as info:
            next(broken())
        assert "after 2 attempt(s)" in info.value.__notes__[-1]
        assert [0.5] == clock.sleeps
        assert {"resilience.retry.retry", "resilience.retry.give_up"} <= {e.name for e in events}

    def test_generator_other_errors_propagate(self, clock):
        """Exceptions outside `on` propagate from a generator at once."""
        runs = []

        @retry(on=KeyError)
        def broken():
            runs.append(1)
            raise Boom
            yield  # pragma: no cover

        with pytest.raises(Boom):
            next(broken())
        assert [1] == runs

    @pytest.mark.anyio
    async def test_async_generator_edges(self, clock):
        """Async generators: empty, giving up, and errors outside `on`."""

        @retry
        async def empty():
            return
            yield  # pragma: no cover

        assert [] == [i async for i in empty()]

        @retry(attempts=3, backoff=NO_JITTER)
        async def broken():
            raise Boom("never")
            yield  # pragma: no cover

        with capture_events("resilience.retry.retry") as events, pytest.raises(Boom) as info:
            await broken().__anext__()
        assert "after 3 attempt(s)" in info.value.__notes__[-1]
        assert [0.5, 1.0] == clock.sleeps
        assert 2 == len(events)

        @retry(on=KeyError)
        async def other():
            raise Boom
            yield  # pragma: no cover

        with pytest.raises(Boom):
            await other().__anext__()

    @pytest.mark.anyio
    async def test_async_generator_attempt_timeout(self):
        """attempt_timeout bounds an async generator's first item; a stall is retried."""
        runs = []

        @retry(attempt_timeout=0.005, backoff=Backoff(base=0))
        async def numbers():
            runs.append(1)
            if len(runs) < 2:
                await asyncio.Event().wait()
            yield 1

        assert [1] == [i async for i in numbers()]
        assert 2 == len(runs)

        @retry(attempts=2, attempt_timeout=0.002, backoff=Backoff(base=0))
        async def stalls():
            await asyncio.Event().wait()
            yield 1  # pragma: no cover

        with pytest.raises(AttemptTimeoutError):
            await stalls().__anext__()
