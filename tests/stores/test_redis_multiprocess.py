"""Several processes, one Redis (any topology): a breaker opened by one is open in all (real time)."""

from __future__ import annotations

import multiprocessing
import queue
import time

import pytest

from ..redis_workers import spec_of


PROCESSES = 4


class Boom(Exception):
    """The failure our fake upstream raises."""


def breaker_worker(namespace: str, index: int, barrier, results, spec) -> None:
    """One process: declare the shared breaker; process 0 opens it; everyone reports what it sees."""
    from resilience import CircuitOpenError, circuit_breaker, get_circuit_breaker
    from tests.redis_workers import open_store

    store = open_store(spec, namespace=namespace)

    @circuit_breaker(store=store, name="shared", failure_threshold=3, reset_timeout=30, on=Boom)
    def call(fail: bool = False) -> str:
        if fail:
            raise Boom
        return "ok"

    try:
        first = call()
        barrier.wait(10)  # everyone saw it closed
        if index == 0:
            for _ in range(3):
                try:
                    call(fail=True)
                except Boom:
                    pass
        barrier.wait(10)  # process 0 opened it
        time.sleep(0.15)  # the others learn of a change within 100 ms (their local state)
        try:
            second = call()
        except CircuitOpenError as error:
            second = f"refused:{error.retry_after > 25}"
        state = get_circuit_breaker("shared", store=store).state
        results.put((index, first, second, state))
    finally:
        store.close()


def test_breaker_opened_by_one_process_is_open_in_all(redis_store):
    """Process 0 fails three times; all four processes then find the breaker open."""
    namespace = redis_store.namespace  # the fixture empties it afterwards
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    workers = [
        context.Process(
            target=breaker_worker,
            args=(namespace, index, barrier, results, spec_of(redis_store)),
        )
        for index in range(PROCESSES)
    ]
    try:
        for worker in workers:
            worker.start()
        seen = sorted(results.get(timeout=30) for _ in workers)
        for worker in workers:
            worker.join(10)
            assert 0 == worker.exitcode
    except queue.Empty:
        pytest.fail(f"a worker did not report; exit codes {[w.exitcode for w in workers]}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    assert [(i, "ok", "refused:True", "open") for i in range(PROCESSES)] == seen
