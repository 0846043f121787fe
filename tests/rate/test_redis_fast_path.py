"""
The Redis rate script's immediate path, its window flag and its bucketed expiries.

The script answers a start with room inline (push first, read -rate/-burst only when the list
is that long), reads the backoff window only through a flag at the log's end, and refreshes
expiries once per bucket of time. These tests hold it to ``RateState`` (the in-memory twin)
on random sequences, to the expiry invariant in its docstring, and to its command count.
"""

from __future__ import annotations

import math
import time
import uuid

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience._rate.redis import RedisRateBackend
from resilience._rate.redis_window import RedisWindowBackend
from resilience._rate.state import MemoryRateBackend
from resilience._rate.window import MemoryWindowBackend
from resilience.stores import RedisStore
from resilience.testing import FakeClock

from ..conftest import redis_store_for


# Times are multiples of 1/8 s and every gap (per * burst / rate) is too, so memory's floats
# and Redis's whole microseconds meet the same boundaries exactly.
STEPS = st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0, 1.5, 3.0])
WAITS = st.sampled_from([0.0, 0.25, 1.0, math.inf])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), WAITS),
        st.tuples(st.just("admit"), st.just(0.0)),
        st.tuples(st.just("resume"), WAITS),
        st.tuples(st.just("advance"), STEPS),
        st.tuples(st.just("extend"), st.sampled_from([0.25, 1.0, 2.0])),
        st.tuples(st.just("clear"), st.just(0.0)),
    ),
    max_size=60,
)
SHAPES = st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4)])


@pytest.fixture(name="plain")
def _plain(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A store on the single server whose scripts read a FakeClock set per example."""
    clock = FakeClock()
    store: Any = redis_store_for("single", request, clock=clock)
    yield store
    store.clear()
    store.close()


def _run(rate: Any, window: Any, clock: FakeClock, op: str, value: float) -> float:
    if op == "reserve":
        return float(rate.reserve(value))
    if op == "admit":
        return float(rate.admit())
    if op == "resume":
        return float(rate.resume(value))
    if op == "extend":
        return float(window.extend(value))
    if op == "clear":
        window.clear()
        return 0.0
    clock.advance(value)
    return 0.0


class TestAgreesWithMemory:
    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(shape=SHAPES, per=st.sampled_from([1.0, 2.0]), ops=OPS)
    def test_same_answers_as_rate_state(
        self, plain: Any, shape: tuple[int, int], per: float, ops: list[tuple[str, float]]
    ) -> None:
        """Any reserves, admits, resumes, windows and gaps: Redis answers as memory does."""
        rate, burst = shape
        clock = plain.clock
        key = uuid.uuid4().hex[:8]
        memory_window = MemoryWindowBackend(clock)
        memory = MemoryRateBackend(rate, per, burst, memory_window, clock)
        remote = RedisRateBackend(plain, key, rate, per, burst)
        remote_window = RedisWindowBackend(key, plain)
        for op, value in ops:
            expected = _run(memory, memory_window, clock, op, value)
            assert expected == pytest.approx(
                _run(remote, remote_window, clock, op, value), abs=2e-6
            ), (op, value)

    def test_window_after_a_refund_still_holds(self, plain: Any) -> None:
        """A refund that drops the log's newest entry below an open window flags the log."""
        clock = plain.clock
        backend = RedisRateBackend(plain, "refund", 4, 1.0, None)
        window = RedisWindowBackend("refund", plain)
        assert 0.0 == backend.reserve_units(math.inf, 2)[0]
        window.extend(1.0)  # after the log's newest entry: the flag
        wait, reserved, _ = backend.reserve_units(math.inf, 2)
        assert (1.0, 1.0) == (wait, reserved)  # behind the window; the flag is gone
        backend.settle_units(reserved, math.nan, -2)  # refunded: the newest entry is 0 again
        assert 1.0 == pytest.approx(backend.reserve(math.inf), abs=1e-6)
        assert 0.0 == clock.monotonic()

    def test_no_flag_without_a_limiter(self, plain: Any) -> None:
        """A window on a key no limiter has used writes no rate key."""
        RedisWindowBackend("alone", plain).extend(5.0)
        assert [] == list(plain.client.scan_iter(match=f"{plain.namespace}:rate:*"))


class TestExpiry:
    """
    The invariant: each list lives at least until its newest entry has left the window and
    idle_ttl after its last change, and at most a bucket past the later of the two.
    """

    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        shape=SHAPES,
        per=st.sampled_from([1.0, 4.0]),
        ttl=st.sampled_from([2.0, 5.0]),
        ops=st.lists(
            st.one_of(  # weighted: mostly decisions and short steps, so buckets get crossed
                *[st.tuples(st.just("reserve"), WAITS)] * 3,
                st.tuples(st.just("admit"), st.just(0.0)),
                *[st.tuples(st.just("advance"), st.sampled_from([0.125, 0.5, 1.5]))] * 2,
                st.tuples(st.just("advance"), st.sampled_from([2.0, 6.0])),
                st.tuples(st.just("extend"), st.sampled_from([0.5, 3.0])),
                st.tuples(st.just("units"), st.sampled_from([1.0, 2.0])),
                st.tuples(st.just("refund"), st.sampled_from([-1.0, 1.0])),
            ),
            min_size=8,
            max_size=50,
        ),
    )
    def test_lists_live_as_long_as_asked_and_not_much_longer(
        self,
        request: pytest.FixtureRequest,
        shape: tuple[int, int],
        per: float,
        ttl: float,
        ops: list[tuple[str, float]],
    ) -> None:
        """
        Expiry is simulated on virtual time (a list past its expiry is deleted): no list dies
        while its newest entry can still constrain a start, or before idle_ttl has passed
        since it last changed; none lives past the later of those by more than a bucket.
        """
        rate, burst = shape
        clock = FakeClock()
        store: Any = redis_store_for("single", request, clock=clock, idle_ttl=ttl)
        try:
            self._check(store, clock, rate, burst, per, ttl, ops)
        finally:
            store.clear()
            store.close()

    @pytest.mark.parametrize(
        ("shape", "ops"),
        [
            pytest.param(  # a new starts list in the bucket of the log's newest entry
                (2, 2),
                [("extend", 0.5), ("reserve", math.inf), ("advance", 0.5), ("reserve", 0.0)],
                id="new-starts-list",
            ),
            pytest.param(  # a waiter's reservation carries the starts list's expiry with it
                (2, 2),
                [
                    ("reserve", 0.0),
                    ("reserve", 0.0),
                    ("reserve", math.inf),  # for 1.0
                    ("advance", 1.0),  # the same bucket: no refresh
                    ("reserve", 0.0),
                    ("advance", 2.0),
                ],
                id="waiter-then-immediate",
            ),
        ],
    )
    def test_known_sequences(
        self, request: pytest.FixtureRequest, shape: tuple[int, int], ops: list[tuple[str, float]]
    ) -> None:
        """The sequences where a skipped refresh would matter, checked every time."""
        clock = FakeClock()
        store: Any = redis_store_for("single", request, clock=clock, idle_ttl=2.0)
        try:
            self._check(store, clock, *shape, 1.0, 2.0, ops)
        finally:
            store.clear()
            store.close()

    def _check(
        self,
        store: Any,
        clock: FakeClock,
        rate: int,
        burst: int,
        per: float,
        ttl: float,
        ops: list[tuple[str, float]],
    ) -> None:
        client: redis.Redis = store.client
        backend = RedisRateBackend(store, "e", rate, per, burst)
        window = RedisWindowBackend("e", store)
        names = {part: store.key("rate", "e", part) for part in ("log", "starts")}
        life = max(ttl, per)
        bucket = min(life / 16, 1.0)
        slop = 0.02  # real seconds a Redis round trip may take; the real time an op took is added
        seen: dict[str, list[int]] = {part: [] for part in names}
        ends: dict[str, float] = {}  # each list's expiry on virtual time
        errs: dict[str, float] = {}  # how early that reading may be (real time passed)
        touched: dict[str, float] = {}
        high = -math.inf  # the newest entry either list ever held (s)
        last_units: tuple[float, float, float] | None = None

        def entries(part: str) -> list[int]:
            return [int(x) for x in client.lrange(names[part], 0, -1) if x != b"w"]

        for op, value in ops:
            now = clock.monotonic()
            if op == "advance":
                clock.advance(value)
                now = clock.monotonic()
                for part, end in list(ends.items()):
                    if end > now:
                        continue
                    newest = max(entries(part), default=0) / 1e6
                    late = slop + errs[part]
                    assert newest + per <= now + late, (part, "died holding", newest)
                    assert touched[part] + ttl <= now + late, (part, "died early")
                    client.delete(names[part])
                    del ends[part]
                    seen[part] = []
                continue
            # Real time hardly moves: give each list, in Redis, what is left of it on virtual
            # time, so a PTTL after the script tells what the script set (or kept).
            began = time.monotonic()
            left = {part: round((end - now) * 1000) for part, end in ends.items()}
            for part, ms in left.items():
                client.pexpire(names[part], ms)
            if op == "units":
                last_units = backend.reserve_units(math.inf, min(int(value), rate))
            elif op == "refund":
                if last_units is None:
                    continue
                _, reserved, started = last_units
                backend.settle_units(reserved, started, int(value))
                last_units = None
                touched["log"] = now  # a settle writes the lists it settles: a touch
                if not math.isnan(started):
                    touched["starts"] = now
            else:
                _run(backend, window, clock, op, value)
            read = {part: (entries(part), int(client.pttl(name))) for part, name in names.items()}
            tolerance = slop + time.monotonic() - began  # what real time could have moved
            for part, (now_entries, ms) in read.items():
                if now_entries != seen[part]:
                    seen[part] = now_entries
                    touched[part] = now
                    high = max([high, *(t / 1e6 for t in now_entries)])
                if ms == -2:
                    ends.pop(part, None)
                    continue
                assert ms != -1, (part, "has no expiry")
                if part not in left or abs(ms - left[part]) > tolerance * 1000:  # the script's
                    ends[part] = now + ms / 1000
                    errs[part] = tolerance
                end, early = ends[part], tolerance + errs[part]
                newest = max(now_entries, default=0) / 1e6
                assert end >= newest + per - early, (part, end, newest)
                assert end >= touched[part] + ttl - early, (part, end, touched[part])
                ceiling = max(touched[part] + ttl, high + life) + bucket + tolerance
                assert end <= ceiling, (part, end, ceiling)


# -- the commands an immediate decision runs, counted by a private server --------------------


@pytest.fixture(name="private", scope="module")
def _private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A redis-server of this module's own: its command counts are ours alone."""
    from ..redis_servers import Server, _base, free_port

    port = free_port()
    server = Server(tmp_path_factory.mktemp("count"), "count", _base(port), port=port).start()
    yield server
    server.kill()


def test_an_immediate_start_runs_four_commands(private: Any) -> None:
    """With room: TIME, LINDEX (the log's newest), RPUSH x2; expiry and trim amortized."""
    store = RedisStore(f"redis://127.0.0.1:{private.port}/0", namespace="count")
    backend = RedisRateBackend(store, "k", 10**6, 1.0, None)
    client = private.client()
    try:
        backend.reserve(math.inf)  # a new log: reads the window, sets both expiries
        client.config_resetstat()
        decisions = 500
        for _ in range(decisions):
            assert 0.0 == backend.reserve(math.inf)
        stats = client.info("commandstats")
        calls = {name[len("cmdstat_") :]: int(row["calls"]) for name, row in stats.items()}
        assert decisions == calls["evalsha"]
        assert decisions == calls["time"]
        assert 2 * decisions == calls["rpush"]
        assert "get" not in calls  # the window: only through the log's flag
        assert decisions <= calls["lindex"] <= decisions * 1.1  # + the trims' few reads
        nested = sum(calls.values()) - calls["evalsha"] - calls.get("config", 0)
        assert nested <= 4.2 * decisions  # PEXPIRE: twice a bucket (1 s here), not per call
    finally:
        client.close()
        store.close()
