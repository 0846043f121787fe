"""Tests for ``@hedged``: every rule of the contract's Hedging section, on virtual time."""

from __future__ import annotations

import asyncio
import itertools
import math

from datetime import timedelta

import pytest

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resilience import (
    HedgingPolicy,
    RetryBudget,
    Stack,
    deadline,
    hedged,
    layers_of,
    resilient,
    retry,
    traced,
)
from resilience.telemetry import current_span
from resilience.testing import FakeClock, capture_events, virtual_time


pytestmark = pytest.mark.anyio


class Handled(Exception):
    """An outcome the policy hedges past (``on=Handled``)."""


class Recorder:
    """
    A hedged target whose attempt *n* sleeps ``durations[n]`` virtual seconds.

    It records when each attempt started and whether its ``finally`` ran; attempts listed
    in *fail* raise ``Handled(n)``, those in *boom* raise ``ValueError(n)``.
    """

    def __init__(
        self,
        clock: FakeClock,
        durations: list[float],
        *,
        fail: tuple[int, ...] = (),
        boom: tuple[int, ...] = (),
    ) -> None:
        self.clock = clock
        self.durations = durations
        self.fail = fail
        self.boom = boom
        self.started: list[float] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.errors: dict[int, BaseException] = {}
        if not _BASELINE:
            _BASELINE.append(asyncio.all_tasks())

    async def __call__(self) -> int:
        number = len(self.started)
        self.started.append(self.clock.monotonic())
        try:
            await self.clock.asleep(self.durations[number])
            if number in self.fail:
                self.errors[number] = Handled(number)
                raise self.errors[number]
            if number in self.boom:
                self.errors[number] = ValueError(number)
                raise self.errors[number]
            return number
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        finally:
            self.finished.append(number)


_BASELINE: list[set[asyncio.Task[object]]] = []


@pytest.fixture(autouse=True)
def _baseline() -> None:
    """Forget the tasks seen by the previous test."""
    _BASELINE.clear()


def only_this_task() -> bool:
    """No task is left but those that ran before the first hedged call of the test."""
    return asyncio.all_tasks() <= _BASELINE[0]


class TestPolicy:
    def test_defaults(self) -> None:
        """The contract's defaults: one hedge after 2 s, on any Exception."""
        policy = HedgingPolicy()
        assert (1, 2.0, Exception, None) == (
            policy.max_hedged_attempts,
            policy.delay,
            policy.on,
            policy.on_result,
        )

    @pytest.mark.parametrize("value", [0, 11, -1])
    def test_attempts_range(self, value: int) -> None:
        """max_hedged_attempts outside 1..10 is a ValueError naming the field and range."""
        with pytest.raises(ValueError, match=r"max_hedged_attempts must be in \[1, 10\]"):
            HedgingPolicy(max_hedged_attempts=value)

    def test_negative_delay(self) -> None:
        """A negative delay is a ValueError naming the field."""
        with pytest.raises(ValueError, match="HedgingPolicy.delay must be >= 0"):
            HedgingPolicy(delay=-0.1)

    def test_timedelta_and_modes(self) -> None:
        """A timedelta is seconds; delay picks latency, parallel or fallback mode."""
        assert 0.25 == HedgingPolicy(delay=timedelta(milliseconds=250)).delay
        assert ["latency", "parallel", "fallback"] == [
            HedgingPolicy(delay=d).mode for d in (0.1, 0, None)
        ]

    def test_from_dict_rejects_unknown(self) -> None:
        """from_dict builds the policy and names unknown keys."""
        assert HedgingPolicy(delay=0.5) == HedgingPolicy.from_dict({"delay": 0.5})
        with pytest.raises(ValueError, match="unknown HedgingPolicy field"):
            HedgingPolicy.from_dict({"dealy": 1})

    def test_bad_budget(self) -> None:
        """A budget without try_retry/record_call is a TypeError."""
        with pytest.raises(TypeError, match="HedgingPolicy.budget"):
            HedgingPolicy(budget=3)

    def test_sync_target_refused(self) -> None:
        """A sync target is a TypeError at decoration that says why."""
        with pytest.raises(TypeError, match="needs an async callable.*cancelled"):

            @hedged(delay=1.0)
            def sync() -> int:
                return 1

    def test_generator_refused(self) -> None:
        """An async generator is refused too."""
        with pytest.raises(TypeError, match="async generator"):

            @hedged
            async def agen():  # type: ignore[no-untyped-def]
                yield 1

    def test_keeps_metadata(self) -> None:
        """The signature, name and coroutine-ness are the target's."""

        @hedged(delay=1)
        async def fetch(a: int, b: str = "x") -> int:
            """Doc."""
            return a

        assert ("fetch", "Doc.") == (fetch.__name__, fetch.__doc__)
        assert asyncio.iscoroutinefunction(fetch)
        assert 1 == len(layers_of(fetch))


class TestLatencyMode:
    async def test_fast_primary_no_hedge(self, clock: FakeClock) -> None:
        """A primary that answers before the delay is the only attempt; no event."""
        target = Recorder(clock, [0.5])
        with capture_events("resilience.hedge.") as events:
            assert 0 == await hedged(delay=1.0)(target)()
        assert [0.0] == target.started
        assert [] == events
        assert only_this_task()

    async def test_slow_primary_hedged_after_delay(self, clock: FakeClock) -> None:
        """The hedge starts delay seconds after the primary; it wins; the loser's finally ran."""
        target = Recorder(clock, [10.0, 1.0])
        assert 1 == await hedged(delay=2.0)(target)()
        assert [0.0, 2.0] == target.started
        assert 3.0 == clock.monotonic()
        assert [1, 0] == target.finished  # the primary's finally ran before the call returned
        assert [0] == target.cancelled
        assert only_this_task()

    async def test_each_hedge_waits_delay_since_the_last_start(self, clock: FakeClock) -> None:
        """With three hedges, they start at delay, 2*delay, 3*delay."""
        target = Recorder(clock, [100.0, 100.0, 100.0, 0.5])
        assert 3 == await hedged(delay=1.0, max_hedged_attempts=3)(target)()
        assert [0.0, 1.0, 2.0, 3.0] == target.started
        assert sorted(target.cancelled) == [0, 1, 2]
        assert sorted(target.finished) == [0, 1, 2, 3]
        assert only_this_task()

    async def test_primary_wins_after_hedge_started(self, clock: FakeClock) -> None:
        """The primary finishing first cancels the hedge, whose finally runs before return."""
        target = Recorder(clock, [3.0, 10.0])
        assert 0 == await hedged(delay=1.0)(target)()
        assert [1] == target.cancelled
        assert [0, 1] == target.finished
        assert 3.0 == clock.monotonic()
        assert only_this_task()

    async def test_handled_starts_next_at_once(self, clock: FakeClock) -> None:
        """A handled outcome starts the next attempt at once, not after the delay."""
        target = Recorder(clock, [0.5, 0.5], fail=(0,))
        assert 1 == await hedged(delay=5.0, on=Handled)(target)()
        assert [0.0, 0.5] == target.started

    async def test_all_handled_primary_outcome(self, clock: FakeClock) -> None:
        """Every attempt handled: the primary's exception is re-raised, the same object."""
        target = Recorder(clock, [0.5, 0.2, 0.1], fail=(0, 1, 2))
        with pytest.raises(Handled) as caught:
            await hedged(delay=5.0, on=Handled, max_hedged_attempts=2)(target)()
        assert caught.value is target.errors[0]
        assert only_this_task()

    async def test_unhandled_exception_wins(self, clock: FakeClock) -> None:
        """An exception not matching on wins at once, raised as itself."""
        target = Recorder(clock, [0.5], boom=(0,))
        with pytest.raises(ValueError, match="0") as caught:
            await hedged(delay=5.0, on=Handled)(target)()
        assert caught.value is target.errors[0]
        assert [0.0] == target.started

    async def test_unhandled_hedge_exception_wins_over_slow_primary(self, clock: FakeClock) -> None:
        """The first unhandled outcome wins even when it is an exception from a hedge."""
        target = Recorder(clock, [10.0, 1.0], boom=(1,))
        with pytest.raises(ValueError, match="1"):
            await hedged(delay=1.0, on=Handled)(target)()
        assert [0] == target.cancelled
        assert only_this_task()

    async def test_on_result_handled(self, clock: FakeClock) -> None:
        """A result for which on_result is true is handled; all handled gives the primary's."""
        calls: list[int] = []

        @hedged(delay=1.0, max_hedged_attempts=2, on_result=lambda r: r < 10)
        async def target() -> int:
            calls.append(len(calls))
            await clock.asleep(0.1)
            return len(calls)

        assert 1 == await target()
        assert 3 == len(calls)

    async def test_on_result_wins(self, clock: FakeClock) -> None:
        """A result for which on_result is false wins."""
        answers = iter([1, 42])

        @hedged(delay=1.0, on_result=lambda r: r < 10)
        async def target() -> int:
            await clock.asleep(0.1)
            return next(answers)

        assert 42 == await target()


class TestParallelMode:
    async def test_all_start_at_once(self, clock: FakeClock) -> None:
        """delay=0 starts every attempt at once; the fastest wins; the primary is attempt 0."""
        target = Recorder(clock, [3.0, 1.0, 2.0])
        assert 1 == await hedged(delay=0, max_hedged_attempts=2)(target)()
        assert [0.0, 0.0, 0.0] == target.started
        assert sorted(target.cancelled) == [0, 2]
        assert sorted(target.finished) == [0, 1, 2]
        assert only_this_task()

    async def test_primary_is_first_started(self, clock: FakeClock) -> None:
        """In parallel mode, the primary (the call's outcome when all are handled) starts first."""
        target = Recorder(clock, [0.3, 0.1, 0.2], fail=(0, 1, 2))
        with pytest.raises(Handled) as caught:
            await hedged(delay=0, max_hedged_attempts=2, on=Handled)(target)()
        assert caught.value is target.errors[0]


class TestFallbackMode:
    async def test_next_only_after_handled(self, clock: FakeClock) -> None:
        """delay=None: a slow primary is never hedged; a handled one is followed at once."""
        slow = Recorder(clock, [100.0])
        assert 0 == await hedged(delay=None)(slow)()
        assert [0.0] == slow.started
        failing = Recorder(clock, [1.0, 1.0], fail=(0,))
        base = clock.monotonic()
        assert 1 == await hedged(delay=None, on=Handled)(failing)()
        assert [base, base + 1.0] == failing.started

    async def test_all_handled(self, clock: FakeClock) -> None:
        """Every attempt handled: the primary's exception, same object."""
        target = Recorder(clock, [0.1, 0.1, 0.1], fail=(0, 1, 2))
        with pytest.raises(Handled) as caught:
            await hedged(delay=None, max_hedged_attempts=2, on=Handled)(target)()
        assert caught.value is target.errors[0]
        assert 3 == len(target.started)


class TestCancellation:
    @pytest.mark.parametrize("delay", [1.0, 0.0, None])
    async def test_caller_cancel_cancels_all(self, clock: FakeClock, delay: float | None) -> None:
        """Cancelling the caller cancels every attempt; all finished before CancelledError."""
        target = Recorder(clock, [100.0, 100.0, 100.0])
        call = asyncio.ensure_future(hedged(delay=delay, max_hedged_attempts=2)(target)())
        await clock.asleep(5.0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert sorted(target.finished) == sorted(target.cancelled)
        assert len(target.finished) == len(target.started)
        assert only_this_task()

    async def test_cancel_while_primary_done_and_hedge_runs(self, clock: FakeClock) -> None:
        """The caller waiting on hedges after a handled primary is cancelled: hedges finish."""
        target = Recorder(clock, [0.5, 100.0], fail=(0,))
        call = asyncio.ensure_future(hedged(delay=1.0, on=Handled)(target)())
        await clock.asleep(5.0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert [1] == target.cancelled
        assert only_this_task()

    async def test_control_flow_never_handled(self, clock: FakeClock) -> None:
        """A CancelledError from the primary is never handed to on=, even BaseException."""
        seen: list[BaseException] = []

        def on(exc: BaseException) -> bool:
            seen.append(exc)
            return True

        @hedged(delay=1.0, on=on)
        async def target() -> None:
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await target()
        assert [] == seen

    async def test_keyboard_interrupt_from_hedge_wins(self, clock: FakeClock) -> None:
        """Control flow from a hedge is never handled: it propagates from the call."""
        seen: list[BaseException] = []
        count = [0]
        _BASELINE.append(asyncio.all_tasks())

        @hedged(delay=1.0, on=lambda e: seen.append(e) or True)
        async def target() -> None:
            count[0] += 1
            if count[0] == 1:
                await clock.asleep(10)
            raise SystemExit(3)

        with pytest.raises(SystemExit):
            await target()
        assert [] == seen
        assert only_this_task()


class TestBudgetAndEvents:
    async def test_budget_refuses_hedge(self, clock: FakeClock) -> None:
        """A spent budget starts no hedge and says so; the primary's outcome stands."""
        budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0)
        target = Recorder(clock, [10.0, 1.0])
        with capture_events("resilience.hedge.") as events:
            assert 0 == await hedged(delay=1.0, budget=budget)(target)()
        assert [0.0] == target.started
        assert ["resilience.hedge.refused"] == [e.name for e in events]
        assert "budget is spent" in events[0].metadata["reason"]

    async def test_hedges_draw_from_budget(self, clock: FakeClock) -> None:
        """Each hedge takes a retry from the budget; each call deposits one."""
        budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=1000)
        fast = hedged(delay=1.0, budget=budget)(Recorder(clock, [0.1] * 4))
        for _ in range(4):
            await fast()
        assert 2.0 == budget.balance()
        await hedged(delay=1.0, budget=budget)(Recorder(clock, [10.0, 1.0]))()
        assert 1.5 == budget.balance()  # one more call (+0.5), one hedge (-1)

    async def test_events(self, clock: FakeClock) -> None:
        """started, cancelled and won events name the attempt."""
        target = Recorder(clock, [10.0, 1.0])
        with capture_events("resilience.hedge.") as events:
            await hedged(delay=1.0, name="fetch")(target)()
        assert [
            ("resilience.hedge.started", 1),
            ("resilience.hedge.won", 1),
            ("resilience.hedge.cancelled", 0),
        ] == [(e.name, e.metadata["attempt"]) for e in events]
        assert {"fetch"} == {e.metadata["name"] for e in events}

    async def test_quiet_traced_spans_are_children(self, clock: FakeClock) -> None:
        """Under an unobserved @traced (its span not yet built), attempts are still its children."""
        target = Recorder(clock, [10.0, 1.0])
        inner = hedged(delay=1.0)(target)
        spans = []

        @traced("call", log=False)
        async def call() -> None:
            await inner()
            spans.append(current_span())

        with capture_events("resilience.hedge.attempt.start") as events:
            await call()
        (span,) = spans
        assert [0, 1] == [e.metadata["attempt"] for e in events]
        assert {span.span_id} == {e.metadata["parent_id"] for e in events}
        assert {span.trace_id} == {e.metadata["trace_id"] for e in events}

    async def test_traced_spans_are_children(self, clock: FakeClock) -> None:
        """Under @traced, one span for the call and each attempt a child of it."""
        target = Recorder(clock, [10.0, 1.0])
        decorated = traced("call", log=False)(hedged(delay=1.0)(target))
        with capture_events("resilience.trace.", "resilience.hedge.attempt.") as events:
            await decorated()
        call = [e for e in events if e.name == "resilience.trace.start"]
        assert 1 == len(call)
        span_id = call[0].metadata["span_id"]
        starts = [e for e in events if e.name == "resilience.hedge.attempt.start"]
        assert [0, 1] == [e.metadata["attempt"] for e in starts]
        assert {span_id} == {e.metadata["parent_id"] for e in starts}
        stops = [e for e in events if e.name == "resilience.hedge.attempt.stop"]
        assert {"cancelled"} == {
            e.metadata.get("outcome") for e in stops if e.metadata["attempt"] == 0
        }


class TestStacked:
    async def test_hedged_outside_retry(self, clock: FakeClock) -> None:
        """@hedged outside @retry: each attempt is a whole retried call."""
        calls: list[float] = []

        @hedged(delay=5.0)
        @retry(attempts=3, on=Handled)
        async def target() -> str:
            calls.append(clock.monotonic())
            await clock.asleep(0.1)
            if len(calls) < 3:
                raise Handled
            return "ok"

        assert "ok" == await target()
        assert ["hedged", "retry"] == [layer.decorator for layer in layers_of(target)]

    async def test_stack_order(self, clock: FakeClock) -> None:
        """Stack puts hedged right inside traced and outside retry."""
        stack = Stack.from_dict({"hedged": {"delay": 1.0}, "retry": {"attempts": 2}, "traced": {}})

        @stack
        async def target() -> int:
            return 1

        assert ["traced", "hedged", "retry"] == [layer.decorator for layer in layers_of(target)]
        assert 1 == await target()

    async def test_resilient_skips_hedging_for_sync_methods(self, clock: FakeClock) -> None:
        """@resilient hedges async methods and leaves the hedge off sync ones."""

        @resilient({"hedged": {"delay": 1.0}, "retry": {"attempts": 2}})
        class Client:
            async def fetch(self) -> int:
                return 1

            def count(self) -> int:
                return 2

        client = Client()
        assert 1 == await client.fetch()
        assert 2 == client.count()
        assert ["hedged", "retry"] == [layer.decorator for layer in layers_of(Client.fetch)]
        assert ["retry"] == [layer.decorator for layer in layers_of(Client.count)]

    async def test_deadline_stops_hedging(self, clock: FakeClock) -> None:
        """No hedge starts once the deadline has passed; the deadline cancels the call."""
        target = Recorder(clock, [100.0, 100.0])
        from resilience import DeadlineExceededError

        with pytest.raises(DeadlineExceededError):
            async with deadline(0.5):
                await hedged(delay=1.0)(target)()
        assert [0.0] == target.started
        assert only_this_task()


def model(
    durations: list[float], handled: list[bool], delay: float | None, total: int
) -> tuple[int, float, list[float]]:
    """The contract's rules as a simulation: (winning attempt, end time, start times)."""
    starts = [0.0] * (total if delay == 0.0 else 1)
    running = {i: durations[i] for i in range(len(starts))}
    last = 0.0
    primary_end = None
    while True:
        timer = last + delay if delay and len(starts) < total else math.inf
        number, end = min(running.items(), key=lambda item: item[1])
        if timer < end:
            starts.append(timer)
            running[len(starts) - 1] = timer + durations[len(starts) - 1]
            last = timer
            continue
        del running[number]
        if number == 0:
            primary_end = end
        if not handled[number]:
            return number, end, starts
        if len(starts) < total:
            starts.append(end)
            running[len(starts) - 1] = end + durations[len(starts) - 1]
            last = end
        elif not running:
            assert primary_end is not None
            return 0, end, starts


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(min_value=1, max_value=40), min_size=n + 1, max_size=n + 1),
            st.lists(st.booleans(), min_size=n + 1, max_size=n + 1),
        )
    ),
    st.sampled_from([None, 0.0, 7.0, 13.0]),
)
def test_matches_model(draw: tuple[list[int], list[bool]], delay: float | None) -> None:
    """Start times, the winner and the end time follow the contract's rules exactly."""
    ticks, handled = draw
    durations = [t + 0.001 * i for i, t in enumerate(ticks)]  # distinct ends, fewer ties
    total = len(durations)
    winner, end, starts = model(durations, handled, delay, total)
    times = sorted(
        [s + durations[i] for i, s in enumerate(starts)]
        + [s + (delay or 0.0) for s in starts if delay]
    )
    assume(all(b - a > 1e-6 for a, b in itertools.pairwise(times)))

    async def run() -> tuple[object, float, list[float], bool]:
        _BASELINE.clear()
        clock = FakeClock()
        with virtual_time(clock):
            target = Recorder(clock, durations, fail=tuple(i for i, h in enumerate(handled) if h))
            decorated = hedged(delay=delay, max_hedged_attempts=total - 1, on=Handled)(target)
            try:
                outcome: object = await decorated()
            except Handled as exc:
                outcome = exc
            every_finished = sorted(target.finished) == list(range(len(target.started)))
            return outcome, clock.monotonic(), target.started, only_this_task() and every_finished

    outcome, finished_at, started, clean = asyncio.run(run())
    expected = winner if not handled[winner] else Handled
    if expected is Handled:
        assert isinstance(outcome, Handled)
        assert 0 == outcome.args[0]
    else:
        assert expected == outcome
    assert pytest.approx(end) == finished_at
    assert pytest.approx(starts) == started
    assert clean


@pytest.mark.parametrize("flow", [KeyboardInterrupt, SystemExit, GeneratorExit])
@pytest.mark.parametrize("delay", [1.0, 0.0, None])
async def test_control_flow_passes_through(
    clock: FakeClock, flow: type[BaseException], delay: float | None
) -> None:
    """Control flow from the primary passes through untouched in every mode, never to on=."""
    seen: list[BaseException] = []
    error = flow()
    calls: list[int] = []

    @hedged(delay=delay, max_hedged_attempts=2, on=lambda e: seen.append(e) or True)
    async def target() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise error
        await clock.asleep(100.0)

    with pytest.raises(flow) as caught:
        await target()
    assert caught.value is error
    assert [] == seen


async def test_opentelemetry_one_span_per_call_attempts_as_children(clock: FakeClock) -> None:
    """Through the OpenTelemetry bridge: one span for the call, each attempt its child."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from resilience.telemetry.otel import attach_opentelemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    adapter = attach_opentelemetry(tracer_provider=provider)
    try:
        target = Recorder(clock, [10.0, 1.0])
        await traced("fetch", log=False)(hedged(delay=1.0)(target))()
    finally:
        adapter.detach()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "fetch"]
    attempts = [s for s in spans if s.name == "resilience.hedge.attempt"]
    assert 2 == len(attempts)
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in attempts)
    assert all(s.context.trace_id == call.context.trace_id for s in attempts)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=4), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.sampled_from([0.0, None, 1.0]),
    st.none() | st.integers(min_value=0, max_value=6),
)
def test_no_attempt_outlives_the_call(
    yields: list[int], fails: list[bool], delay: float | None, cancel_after: int | None
) -> None:
    """Real tasks that yield to the loop; caller cancelled or not: every attempt has finished."""

    async def run() -> None:
        before = asyncio.all_tasks()
        finished: list[int] = []
        count = [0]

        @hedged(delay=delay, max_hedged_attempts=3, on=KeyError)
        async def target() -> int:
            number = count[0]
            count[0] += 1
            try:
                for _ in range(yields[number]):
                    await asyncio.sleep(0)
                if fails[number]:
                    raise KeyError(number)
                return number
            finally:
                finished.append(number)

        call = asyncio.ensure_future(target())
        if cancel_after is not None:
            for _ in range(cancel_after):
                await asyncio.sleep(0)
            call.cancel()
        try:
            await call
        except (KeyError, asyncio.CancelledError):
            pass
        assert sorted(finished) == list(range(count[0]))
        assert asyncio.all_tasks() <= before

    with virtual_time():
        asyncio.run(run())


async def test_hedging_rides_out_injected_latency(clock: FakeClock) -> None:
    """Stacked over chaos latency: every call answers within delay + one fast attempt."""
    from resilience.chaos import inject_latency

    @hedged(delay=0.1, max_hedged_attempts=3)
    @inject_latency(5.0, rate=0.3, seed=11)
    async def fetch() -> str:
        await clock.asleep(0.01)
        return "ok"

    hidden = 0
    for _ in range(50):
        start = clock.monotonic()
        with capture_events("resilience.chaos.latency") as slow:
            assert "ok" == await fetch()
        took = clock.monotonic() - start
        if len(slow) < 4:  # some attempt was fast: the call took at most 3 delays and it
            assert took <= 0.1 * 3 + 0.01 + 1e-9
            hidden += bool(slow)
        else:  # every attempt was slowed: the primary's 5 s stands
            assert 5.0 <= took <= 5.01 + 1e-9
    assert hidden > 5  # latency was injected, and hedging hid it


async def test_switched_off_calls_once(clock: FakeClock) -> None:
    """With resilience.set_active(False) the call runs once, unhedged."""
    from resilience import set_active

    target = Recorder(clock, [10.0, 1.0])
    set_active(False)
    assert 0 == await hedged(delay=1.0)(target)()
    assert [0.0] == target.started


async def test_redis_budget_asked_without_blocking(clock: FakeClock, redis_store: object) -> None:
    """A Redis-backed budget is asked through its async twin, from the hedge's own task."""
    from resilience.telemetry import attach

    spent = RetryBudget(ratio=0.0, min_retries_per_second=0.0, key="hedge-spent", store=redis_store)
    roomy = RetryBudget(ratio=1.0, min_retries_per_second=1.0, key="hedge-roomy", store=redis_store)
    refused = asyncio.Event()
    handle = attach(lambda event: refused.set(), ["resilience.hedge.refused"])
    calls: list[int] = []

    async def target() -> int:
        calls.append(len(calls))
        if len(calls) == 1:
            await refused.wait()  # the primary answers once the hedge was refused
            return 0
        return 1

    try:
        assert 0 == await hedged(delay=1.0, budget=spent)(target)()
        assert [0] == calls  # the hedge never called
        calls.clear()
        never = asyncio.Event()

        async def slow_primary() -> int:
            calls.append(len(calls))
            if len(calls) == 1:
                await never.wait()
            return len(calls) - 1

        assert 1 == await hedged(delay=1.0, budget=roomy)(slow_primary)()
        assert [0, 1] == calls
    finally:
        handle.detach()
        await redis_store.aclose()  # type: ignore[attr-defined]  # the async twin, in this loop
