"""The circuit breaker over each store: memory and Redis must agree, transition by transition."""

from __future__ import annotations

import threading
import time

import pytest

from resilience import CircuitOpenError, circuit_breaker, get_circuit_breaker
from resilience.stores import MemoryStore, RedisStore
from resilience.testing import capture_events

from ..redis_workers import open_store, spec_of


class Boom(Exception):
    """The failure our fake upstream raises."""


class Other(Exception):
    """An exception the breaker is not told about."""


def flaky(store, **fields):
    """A function that fails when told to, behind a breaker on *store*."""
    fields.setdefault("name", "upstream")
    fields.setdefault("failure_threshold", 2)
    fields.setdefault("reset_timeout", 10.0)

    @circuit_breaker(store=store, on=Boom, **fields)
    def call(fail=False, error=Boom):
        if fail:
            raise error
        return "ok"

    return call


def fail(call, times=1):
    for _ in range(times):
        with pytest.raises(Boom):
            call(fail=True)


def transitions(events):
    return [
        (e.metadata["from"], e.metadata["to"])
        for e in events
        if e.name == "resilience.breaker.state_change"
    ]


class TestTransitions:
    def test_closed_to_open_after_threshold(self, store, clock):
        """failure_threshold consecutive failures open it; then calls are refused with retry_after."""
        call = flaky(store)
        with capture_events("resilience.breaker") as events:
            fail(call)
            assert "ok" == call()  # a success resets the consecutive count
            fail(call, 2)
            with pytest.raises(CircuitOpenError) as refused:
                call()
        assert [("closed", "open")] == transitions(events)
        assert 10.0 == pytest.approx(refused.value.retry_after)
        assert "2 consecutive failure(s)" in str(refused.value)
        stats = get_circuit_breaker("upstream", store=store).stats
        assert ("open", 2, 3, 1, 1) == (
            stats.state,
            stats.consecutive_failures,
            stats.failures,
            stats.rejected,
            stats.times_opened,
        )

    def test_open_to_half_open_to_closed(self, store, clock):
        """After reset_timeout it reports half-open; a probe's success closes it."""
        call = flaky(store)
        fail(call, 2)
        breaker = get_circuit_breaker("upstream", store=store)
        clock.advance(9.5)
        assert "open" == breaker.state
        assert 0.5 == pytest.approx(breaker.stats.retry_after)
        clock.advance(0.5)
        assert "half_open" == breaker.state
        with capture_events("resilience.breaker") as events:
            assert "ok" == call()
        assert [("open", "half_open"), ("half_open", "closed")] == transitions(events)
        assert "closed" == breaker.state
        assert 0 == breaker.stats.consecutive_failures

    def test_probe_failure_reopens(self, store, clock):
        """A failed probe opens it again, for a whole reset_timeout more."""
        call = flaky(store)
        fail(call, 2)
        clock.advance(10)
        with capture_events("resilience.breaker") as events:
            fail(call)
        assert [("open", "half_open"), ("half_open", "open")] == transitions(events)
        with pytest.raises(CircuitOpenError) as refused:
            call()
        assert 10.0 == pytest.approx(refused.value.retry_after)
        assert "a probe call failed" in str(refused.value)
        assert 2 == get_circuit_breaker("upstream", store=store).stats.times_opened

    def test_probe_slots_and_ignored_outcome(self, store, clock):
        """half_open_max_calls probes run at once; an ignored exception gives its slot back."""
        breaker = flaky(store, half_open_max_calls=2)
        fail(breaker, 2)
        clock.advance(10)
        backend = store.backend("breaker", "upstream", None)
        first, second, third = backend.admit(), backend.admit(), backend.admit()
        assert first.ticket > 0
        assert first.ticket == second.ticket  # one spell, one number
        assert -1 == third.ticket
        assert "2 probe slot(s) are taken" in third.reason
        backend.record(first.ticket, 2)  # IGNORED: the slot comes back
        assert second.ticket == backend.admit().ticket
        assert 2 == get_circuit_breaker("upstream", store=store).stats.probes

    def test_late_probe_of_an_old_spell_counts_as_a_plain_call(self, store, clock):
        """An outcome handed back with a finished spell's number does not close the breaker."""
        call = flaky(store, half_open_max_calls=2)
        fail(call, 2)
        clock.advance(10)
        backend = store.backend("breaker", "upstream", None)
        slow = backend.admit()
        fast = backend.admit()
        assert backend.record(fast.ticket, 1) is not None  # the spell ends: open again
        assert backend.record(slow.ticket, 0) is None
        assert "open" == get_circuit_breaker("upstream", store=store).state

    def test_other_exceptions_are_neither(self, store, clock):
        """An exception outside `on` counts as neither success nor failure."""
        call = flaky(store)
        fail(call)
        with pytest.raises(Other):
            call(fail=True, error=Other)
        fail(call)
        assert "open" == get_circuit_breaker("upstream", store=store).state

    def test_reset_by_hand(self, store, clock):
        """reset() closes it and clears the counts; the totals stay."""
        call = flaky(store)
        fail(call, 2)
        breaker = get_circuit_breaker("upstream", store=store)
        with capture_events("resilience.breaker") as events:
            breaker.reset()
        assert [("open", "closed")] == transitions(events)
        assert "ok" == call()
        stats = breaker.stats
        assert (0, 2, None) == (stats.consecutive_failures, stats.failures, stats.opened_at)


class TestFailureRate:
    def test_count_window(self, store, clock):
        """The share of failures among the last window_size calls opens it, past minimum_calls."""
        call = flaky(store, failure_rate=0.5, window_size=4, minimum_calls=4)
        fail(call)
        call()
        call()
        breaker = get_circuit_breaker("upstream", store=store)
        assert (3, 1) == (breaker.stats.window_calls, breaker.stats.window_failures)
        fail(call)  # 2 of 4: opens
        # memory and Redis agree on the message, percentages included
        with pytest.raises(CircuitOpenError, match=r"2 of the last 4 calls failed \(50% >= "):
            call()

    def test_count_window_forgets_the_oldest(self, store, clock):
        """Only the last window_size calls count: the ring drops the oldest outcome."""
        call = flaky(store, failure_rate=0.75, window_size=4, minimum_calls=4)
        fail(call, 2)
        for _ in range(4):
            call()
        fail(call, 2)
        stats = get_circuit_breaker("upstream", store=store).stats
        assert ("closed", 4, 2) == (stats.state, stats.window_calls, stats.window_failures)

    def test_time_window_expires_old_calls(self, store, clock):
        """Calls older than window_duration drop out of the rate."""
        call = flaky(store, failure_rate=0.5, window_duration=10.0, minimum_calls=3)
        fail(call, 2)
        clock.advance(11)
        call()
        call()
        fail(call)
        breaker = get_circuit_breaker("upstream", store=store)
        assert ("closed", 3, 1) == (
            breaker.state,
            breaker.stats.window_calls,
            breaker.stats.window_failures,
        )
        fail(call)
        assert "open" == breaker.state


class TestSharing:
    def test_two_functions_share_one_breaker(self, store, clock):
        """Two decorated functions with the same name on one store share the state."""
        first = flaky(store)
        second = flaky(store)
        fail(first)
        fail(second)
        with pytest.raises(CircuitOpenError):
            first()
        with pytest.raises(CircuitOpenError):
            second()

    def test_same_name_different_numbers_refused(self, store):
        """A second declaration with other numbers is refused, as for memory."""
        flaky(store)
        with pytest.raises(ValueError, match="already declared"):
            flaky(store, failure_threshold=3)

    @pytest.mark.anyio
    async def test_async_callable(self, store, clock):
        """Async callables use the async twins and agree with sync ones on the same breaker."""

        @circuit_breaker(store=store, name="upstream", failure_threshold=2, reset_timeout=10)
        async def call(fail=False):
            if fail:
                raise Boom
            return "ok"

        sync = flaky(store)
        try:
            assert "ok" == await call()
            with pytest.raises(Boom):
                await call(fail=True)
            fail(sync)
            with pytest.raises(CircuitOpenError):
                await call()
            clock.advance(10)
            assert "ok" == await call()  # the probe
            assert "closed" == get_circuit_breaker("upstream", store=store).state
        finally:
            if isinstance(store, RedisStore):
                await store.aclose()


class TestRedisOnly:
    def test_another_process_view(self, redis_store, clock):
        """A store that never declared the breaker finds it in Redis, config and state."""
        call = flaky(redis_store)
        fail(call, 2)
        other = open_store(
            spec_of(redis_store), namespace=redis_store.namespace, clock=redis_store.clock
        )
        try:
            assert ["upstream"] == other.keys("breaker")
            assert "open" == get_circuit_breaker("upstream", store=other).state
            with pytest.raises(KeyError, match="known: upstream"):
                get_circuit_breaker("nope", store=other)
        finally:
            other.close()

    def test_keys_expire_when_idle(self, redis_store, clock):
        """Every key a breaker writes carries an expiry."""
        call = flaky(redis_store, failure_rate=0.5, window_size=4)
        fail(call, 2)
        client = redis_store.client
        names = list(client.scan_iter(match=f"{redis_store.namespace}:breaker:*"))
        assert 2 == len(names)  # the hash and the ring
        assert all(0 < client.pttl(name) <= redis_store.ttl_ms for name in names)

    def test_server_time(self, redis_store):
        """Without a test clock, scripts use Redis TIME: reset_timeout runs in real time."""
        store = open_store(spec_of(redis_store), namespace=redis_store.namespace)
        try:
            call = flaky(store, reset_timeout=0.2)
            fail(call, 2)
            with pytest.raises(CircuitOpenError) as refused:
                call()
            assert 0.1 < refused.value.retry_after <= 0.2
            time.sleep(0.25)
            assert "ok" == call()
        finally:
            store.close()

    def test_probe_limit_under_32_threads(self, redis_store, clock):
        """32 threads racing a half-open breaker: exactly half_open_max_calls probes run."""
        gate = threading.Event()
        running = []
        lock = threading.Lock()

        @circuit_breaker(
            store=redis_store,
            name="raced",
            failure_threshold=1,
            reset_timeout=5,
            half_open_max_calls=3,
            on=Boom,
        )
        def probe(fail=False):
            if fail:
                raise Boom
            with lock:
                running.append(threading.get_ident())
            gate.wait(60)
            return "ok"

        with pytest.raises(Boom):
            probe(fail=True)
        clock.advance(5)
        start = threading.Barrier(32)
        outcomes = []

        def racer():
            start.wait()
            try:
                outcomes.append(probe())
            except CircuitOpenError as error:
                outcomes.append(error.state)

        threads = [threading.Thread(target=racer) for _ in range(32)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30  # 32 new connections (TLS: 32 handshakes)
            while outcomes.count("half_open") < 29 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert 3 == len(running)
            assert 29 == outcomes.count("half_open")
        finally:
            gate.set()
            for thread in threads:
                thread.join(30)
        assert 3 == outcomes.count("ok")
        assert "closed" == get_circuit_breaker("raced", store=redis_store).state


def test_memory_store_is_unchanged_by_redis(clock):
    """A MemoryStore keeps the lock-free closed fast path: closed/dirty hints are live."""
    store = MemoryStore()
    flaky(store)()
    backend = store.peek("breaker", "upstream")
    assert backend.closed
    assert not backend.dirty
