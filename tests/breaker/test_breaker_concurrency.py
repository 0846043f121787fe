"""One shared breaker hammered by real threads and real asyncio tasks through whole cycles."""

from __future__ import annotations

import asyncio
import sys
import threading

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilience import CircuitOpenError, circuit_breaker, get_circuit_breaker
from resilience.testing import FakeClock


THREADS = 32
TASKS = 500
PROBES = 3
WAIT = 10.0  # a bound against deadlock, never reached when all is well


class Boom(Exception):
    """The upstream's failure."""


@pytest.fixture(autouse=True)
def _preempt_often() -> Iterator[None]:
    """Switch threads every 50 µs so races between check and update get their chance."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    yield
    sys.setswitchinterval(previous)


class Upstream:
    """
    A fake dependency whose behaviour the test switches per phase.

    ``down``: every caller waits until all of the phase's callers are inside, then raises
    (so all of them were admitted while the breaker was closed). ``probe``/``probe_fail``:
    callers count themselves in and wait for ``release``. ``up``: returns at once.
    """

    def __init__(self, callers: int) -> None:
        self.mode = "up"
        self.callers = callers
        self.cond = threading.Condition()
        self.inside = 0
        self.most = 0
        self.release = threading.Event()
        self.all_in = threading.Barrier(callers)

    def enter(self) -> None:
        with self.cond:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.cond.notify_all()

    def leave(self) -> None:
        with self.cond:
            self.inside -= 1

    def __call__(self) -> str:
        mode = self.mode
        if mode == "down":
            self.all_in.wait(WAIT)
            raise Boom
        if mode == "up":
            return "ok"
        self.enter()
        try:
            assert self.release.wait(WAIT)
        finally:
            self.leave()
        if mode == "probe_fail":
            raise Boom
        return "ok"


def run_cycles(
    phase: Callable[[str, int], list[Any]], up: Upstream, clock: FakeClock, callers: int
) -> None:
    """Drive open, failed probe, good probe and closed phases; check counts and states."""
    breaker = get_circuit_breaker("hammer")
    for _ in range(4):
        before = breaker.stats
        assert "closed" == before.state

        results = phase("down", callers)
        assert [Boom] * callers == [type(r) for r in results]
        after = breaker.stats
        assert callers == after.failures - before.failures  # none lost, none extra
        assert ("open", before.times_opened + 1) == (after.state, after.times_opened)

        for mode, state in (("probe_fail", "open"), ("probe", "closed")):
            clock.advance(10)
            assert "half_open" == breaker.state
            up.most = 0
            results = phase(mode, callers)
            refused = [r for r in results if isinstance(r, CircuitOpenError)]
            ran = [r for r in results if not isinstance(r, CircuitOpenError)]
            assert callers - PROBES == len(refused)
            assert PROBES == len(ran)
            assert PROBES == up.most
            assert state == breaker.state

        results = phase("up", callers)
        assert ["ok"] * callers == results
        assert 0 == breaker.stats.consecutive_failures


def test_threads_through_cycles() -> None:
    """32 threads: exact failure counts, exactly PROBES concurrent probes, no deadlock."""
    clock = FakeClock()
    up = Upstream(THREADS)
    call = circuit_breaker(
        name="hammer",
        failure_threshold=THREADS,
        reset_timeout=10,
        half_open_max_calls=PROBES,
        clock=clock,
    )(up)
    start = threading.Barrier(THREADS + 1)
    done = threading.Barrier(THREADS + 1)
    results: list[Any] = []
    stop = False

    def worker() -> None:
        while True:
            start.wait(WAIT)
            if stop:
                return
            try:
                outcome: Any = call()
            except (Boom, CircuitOpenError) as exc:
                outcome = exc
            with up.cond:
                results.append(outcome)
                up.cond.notify_all()
            done.wait(WAIT)

    def phase(mode: str, callers: int) -> list[Any]:
        results.clear()
        up.mode = mode
        up.release.clear()
        start.wait(WAIT)
        if mode.startswith("probe"):
            with up.cond:
                assert up.cond.wait_for(
                    lambda: up.inside == PROBES and len(results) == callers - PROBES, WAIT
                )
            up.release.set()
        done.wait(WAIT)
        return list(results)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        run_cycles(phase, up, clock, THREADS)
    finally:
        stop = True
        start.wait(WAIT)
        for thread in threads:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)


def test_tasks_through_cycles() -> None:
    """500 asyncio tasks: exact failure counts, exactly PROBES concurrent probes."""
    clock = FakeClock()
    up = AsyncUpstream(TASKS)

    @circuit_breaker(
        name="hammer",
        failure_threshold=TASKS,
        reset_timeout=10,
        half_open_max_calls=PROBES,
        clock=clock,
    )
    async def call() -> str:
        return await up()

    async def one() -> Any:
        try:
            return await call()
        except (Boom, CircuitOpenError) as exc:
            return exc

    async def main() -> None:
        breaker = get_circuit_breaker("hammer")
        for _ in range(4):
            before = breaker.stats
            up.mode = "down"
            up.arrived = 0
            up.all_in = asyncio.Event()
            results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(TASKS))), WAIT)
            assert [Boom] * TASKS == [type(r) for r in results]
            after = breaker.stats
            assert TASKS == after.failures - before.failures  # none lost, none extra
            assert ("open", before.times_opened + 1) == (after.state, after.times_opened)

            for mode, state in (("probe_fail", "open"), ("probe", "closed")):
                clock.advance(10)
                assert "half_open" == breaker.state
                up.mode = mode
                up.most = 0
                up.release = asyncio.Event()
                tasks = [asyncio.ensure_future(one()) for _ in range(TASKS)]
                await asyncio.wait_for(up.probes_in.wait(), WAIT)
                up.probes_in.clear()
                # every other task has arrived and been refused while the probes wait
                refused_now = sum(
                    1 for t in tasks if t.done() and isinstance(t.result(), CircuitOpenError)
                )
                up.release.set()
                results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
                refused = [r for r in results if isinstance(r, CircuitOpenError)]
                assert TASKS - PROBES == len(refused)
                assert TASKS - PROBES == refused_now
                assert PROBES == up.most
                assert state == breaker.state

            up.mode = "up"
            results = await asyncio.gather(*(one() for _ in range(TASKS)))
            assert ["ok"] * TASKS == results

    asyncio.run(main())


class AsyncUpstream:
    """The async twin of ``Upstream``, synchronised with asyncio events."""

    def __init__(self, callers: int) -> None:
        self.mode = "up"
        self.callers = callers
        self.arrived = 0
        self.all_in = asyncio.Event()
        self.inside = 0
        self.most = 0
        self.release = asyncio.Event()
        self.probes_in = asyncio.Event()

    async def __call__(self) -> str:
        mode = self.mode
        if mode == "down":
            self.arrived += 1
            if self.arrived == self.callers:
                self.all_in.set()
            await self.all_in.wait()
            raise Boom
        if mode == "up":
            return "ok"
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside == PROBES:
            self.probes_in.set()
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        if mode == "probe_fail":
            raise Boom
        return "ok"


def test_threads_lose_no_counts_in_rate_mode() -> None:
    """32 threads recording thousands of outcomes: the window holds every one."""
    calls_each = 200

    @circuit_breaker(name="count", failure_rate=1.0, window_size=100_000, minimum_calls=100_000)
    def call(fail: bool) -> None:
        if fail:
            raise Boom

    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        start.wait(WAIT)
        for i in range(calls_each):
            try:
                call((i + index) % 3 == 0)
            except Boom:
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    failures = sum(1 for index in range(THREADS) for i in range(calls_each) if (i + index) % 3 == 0)
    stats = get_circuit_breaker("count").stats
    assert (THREADS * calls_each, failures, failures) == (
        stats.window_calls,
        stats.window_failures,
        stats.failures,
    )
