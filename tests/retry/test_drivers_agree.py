"""
The four drivers (sync, async, generator, async generator) are four loops over one core:
for any script of outcomes and any policy they make the same attempts, wait the same virtual
time, end the same way and emit the same events, with and without anyone listening.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import Backoff, RetryBudget, RetryPolicy, retry
from resilience.testing import capture_events, virtual_time


class Failed(Exception):
    pass


Script = list[str]  # per attempt: "fail", "stop" (not retryable), "bad" (a result to retry), "ok"


def run_plain(policy: RetryPolicy, script: Script, kind: str) -> object:
    steps = iter(script)

    def step() -> str:
        what = next(steps, "ok")
        if what in ("fail", "stop"):
            raise Failed(what)
        return what

    if kind == "sync":
        return retry(policy)(step)()

    @retry(policy)
    async def astep() -> str:
        await asyncio.sleep(0)
        return step()

    return asyncio.run(astep())


def run_generator(policy: RetryPolicy, script: Script, kind: str) -> object:
    steps = iter(script)

    def first() -> str:
        what = next(steps, "ok")
        if what in ("fail", "stop"):
            raise Failed(what)
        return what

    if kind == "gen":

        @retry(policy)
        def items() -> Iterator[str]:
            yield first()
            yield "more"

        return list(items())

    @retry(policy)
    async def aitems() -> AsyncIterator[str]:
        await asyncio.sleep(0)
        yield first()
        yield "more"

    async def collect() -> list[str]:
        return [item async for item in aitems()]

    return asyncio.run(collect())


def observe(run: Callable[[], object], listening: bool) -> tuple[Any, ...]:
    """What a run shows from outside: its end, the virtual time spent, and the events."""
    with virtual_time() as clock:
        if listening:
            with capture_events("resilience.retry.") as events:
                end = outcome_of(run)
            names = [
                (e.name, e.measurements.get("attempt"), e.metadata.get("reason")) for e in events
            ]
        else:
            end, names = outcome_of(run), []
    return end, round(clock.monotonic(), 9), names


def outcome_of(run: Callable[[], object]) -> object:
    try:
        return ("returned", run())
    except Failed as exc:
        notes = [note.split(" in ")[0] for note in getattr(exc, "__notes__", [])]
        return ("raised", str(exc), notes)


policies = st.builds(
    dict,
    attempts=st.one_of(st.none(), st.integers(1, 5)),
    backoff=st.sampled_from([Backoff(base=0), Backoff(base=0.5, jitter="none")]),
    timeout=st.one_of(st.none(), st.sampled_from([0.4, 1.0, 3.0])),
    retry_stop=st.booleans(),
    budget=st.sampled_from([None, (0.0, 0.2)]),  # (ratio, min per second): 2 retries per window
)
scripts = st.lists(st.sampled_from(["fail", "fail", "stop", "bad", "ok"]), max_size=7)


def build(fields: dict[str, Any], on_result: bool) -> RetryPolicy:
    budget = fields["budget"]
    return RetryPolicy(
        name="probe",  # one name whatever the driver, so notes and events compare
        attempts=fields["attempts"],
        backoff=fields["backoff"],
        timeout=fields["timeout"],
        on=Failed if fields["retry_stop"] else (lambda exc: str(exc) == "fail"),
        on_result=(lambda result: result == "bad") if on_result else None,
        budget=None
        if budget is None
        else RetryBudget(ratio=budget[0], min_retries_per_second=budget[1]),
    )


@settings(max_examples=60, deadline=None)
@given(fields=policies, script=scripts, on_result=st.booleans(), listening=st.booleans())
def test_sync_and_async_calls_agree(
    fields: dict[str, Any], script: Script, on_result: bool, listening: bool
) -> None:
    sync = observe(lambda: run_plain(build(fields, on_result), script, "sync"), listening)
    asynchronous = observe(lambda: run_plain(build(fields, on_result), script, "async"), listening)
    assert sync == asynchronous


@settings(max_examples=60, deadline=None)
@given(fields=policies, script=scripts, listening=st.booleans())
def test_generators_agree_with_calls(
    fields: dict[str, Any], script: Script, listening: bool
) -> None:
    """Until its first item a generator is retried as a call is; then its items follow."""
    script = [what for what in script if what != "bad"]
    call = observe(lambda: run_plain(build(fields, False), script, "sync"), listening)
    # Generators emit no per-attempt events (a generator's attempt has no single end).
    call = (*call[:2], [event for event in call[2] if ".attempt." not in event[0]])
    for kind in ("gen", "asyncgen"):
        seen = observe(lambda: run_generator(build(fields, False), script, kind), listening)
        end, elapsed, events = seen
        if end[0] == "returned":
            assert ["ok", "more"] == end[1]
            end = ("returned", "ok")
        assert call == (end, elapsed, events)
