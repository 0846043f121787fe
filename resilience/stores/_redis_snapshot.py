"""
The operator's view of a ``RedisStore``: every key of its namespace, read without a write.

``snapshot(store)`` makes one ``SCAN`` pass over the namespace (per node), groups the keys
by concern and key (each concern registered its key suffixes and its reader with
``RedisStore.register_view``), then sends one pipeline of plain reads (``TIME``,
``HGETALL``, ``LRANGE``, ``GET``, ``ZRANGE``), in ``MULTI``/``EXEC`` on one server so the
whole view is of one instant: no script, no blocking command, never a write. On a cluster
each backend's keys (one hash tag) are read back to back within one pipelined round trip.

The numbers a key's data does not hold (a limiter's rate, a pool's limit, a budget's
ratio, a breaker's config before its first failure) come from the namespace's *meta*
hash, ``<ns>:meta``: when a process first makes a backend it records the backend's
``meta()`` there, off the call path (a daemon thread, so a slow or absent server never
delays a call), and refreshes it every ``idle_ttl / 2`` seconds while the store lives.
So a declared backend whose state is idle (or expired) still shows, with zero counts;
the entries of processes gone for ``idle_ttl`` expire with the hash.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import threading
import time

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from resilience._errors import StoreUnavailableError
from resilience._snapshot import LimiterSnapshot, Snapshot


if TYPE_CHECKING:
    from resilience.stores._redis import RedisStore


__all__ = [
    "MetaWriter",
    "View",
    "meta_key",
    "read_one",
    "snapshot",
    "text",
    "view_of",
    "views",
]

Read = tuple[Any, ...]
"""One pipelined read: a redis-py method name, its arguments and maybe its keywords."""


@dataclass(frozen=True, slots=True)
class View:
    """How the snapshot reads one concern: its key suffixes, its reads, its record."""

    suffixes: tuple[str, ...]
    reads: Callable[[RedisStore, str], list[Read]]
    build: Callable[[RedisStore, str, list[Any], int, float, dict[str, Any] | None], Any]


def text(value: Any) -> str:
    """Decode a Redis reply to text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def meta_key(store: RedisStore) -> str:
    """The hash of every declared backend's numbers in *store*'s namespace."""
    return f"{store.namespace}:meta"


def _errors(store: RedisStore | None = None) -> tuple[type[BaseException], ...]:
    """The client errors that mean "unreachable": the store's own list, else redis-py's."""
    own = getattr(store, "_error", None)
    if own is not None:
        return (*(own if isinstance(own, tuple) else (own,)), OSError)
    import redis  # noqa: PLC0415 - optional dependency, loaded by RedisStore already

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _unquote(text: str) -> str:
    return text.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


def _now_us(store: RedisStore, replies: list[Any]) -> tuple[int, list[Any]]:
    """The scripts' clock in whole microseconds: the test clock's, else the server's TIME."""
    clock = store.clock
    if clock is not None:
        return round(clock.monotonic() * 1_000_000), replies
    seconds, micros = replies[0]
    return int(seconds) * 1_000_000 + int(micros), replies[1:]


def _wall(store: RedisStore, now_us: int) -> float:
    clock = store.clock
    if clock is not None:
        return float(clock.time())
    return now_us / 1_000_000  # server TIME is epoch time


def views(store: RedisStore) -> dict[str, View]:
    """Every registered concern's ``View`` (each registered the module that defines it)."""
    return {concern: view_of(store, concern) for concern in store._views}


def view_of(store: RedisStore, concern: str) -> View:
    """The ``View`` of *concern*: the ``VIEW`` (or ``module:NAME``) it registered."""
    module, _, name = store._views[concern].partition(":")
    found: View = getattr(importlib.import_module(module), name or "VIEW")
    return found


def _split(store: RedisStore, name: str, known: dict[str, View]) -> tuple[str, str] | None:
    """Return (concern, key) of a Redis key name of *store*'s namespace, or None."""
    prefix = f"{store.namespace}:"
    if not name.startswith(prefix):
        return None
    concern, _, rest = name[len(prefix) :].partition(":")
    view = known.get(concern)
    if view is None or not rest:
        return None
    if rest.startswith("{") and "}" in rest:  # <ns>:<concern>:{<key>}[:<part>]: a hash tag
        close = rest.index("}")
        key, part = _unquote(rest[1:close]), rest[close + 1 :]
        if not part and "" in view.suffixes:
            return concern, key
        if part.startswith(":") and part[1:] in view.suffixes:
            return concern, key
        return None
    for suffix in view.suffixes:
        if suffix and rest.endswith(f":{suffix}"):
            return concern, rest[: -len(suffix) - 1]
    if "" in view.suffixes:
        return concern, rest
    return None


def _scan(store: RedisStore) -> list[str]:
    """Every key name of the namespace: one SCAN pass on each node."""
    own = getattr(store, "_scan", None)
    if own is not None:  # the store knows its topology (a cluster scans every primary)
        glob = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})
        found: list[str] = own(f"{store.namespace.translate(glob)}:*")
        return found
    client = store.client
    nodes = getattr(client, "get_primaries", None)
    match = f"{store.namespace}:*"
    if nodes is None:
        return [text(n) for n in client.scan_iter(match=match, count=1000)]
    names: list[str] = []
    for node in nodes():
        connection = client.get_redis_connection(node)
        names.extend(text(n) for n in connection.scan_iter(match=match, count=1000))
    return names


def _pipeline(store: RedisStore, reads: Sequence[Read]) -> list[Any]:
    # One server: MULTI/EXEC, so every record is read at one instant (reads only: nothing
    # is written, nothing blocks). A cluster cannot run one across slots: there each
    # backend's keys share a hash tag and are read back to back.
    single = not getattr(store, "cluster", hasattr(store.client, "get_primaries"))
    pipe = store.client.pipeline(transaction=single)
    now: list[Any] = []
    if store.clock is None:
        if single:
            pipe.time()
        else:  # a cluster pipeline refuses TIME (it has no slot): one node's, just before
            now.append(store.client.time())
    for method, args, *keywords in reads:
        getattr(pipe, method)(*args, **(keywords[0] if keywords else {}))
    return now + list(pipe.execute())


def read_one(store: RedisStore, concern: str, key: str, meta: dict[str, Any] | None) -> Any:
    """
    Read one backend's record (for ``snapshot()`` on a backend this process made).

    Raises:
        StoreUnavailableError: Redis did not answer within the store's timeout.
    """
    view = view_of(store, concern)
    reads = view.reads(store, key)
    try:
        replies = _pipeline(store, reads)
    except _errors(store) as error:
        raise StoreUnavailableError(key, store=store.describe(), timeout=store.timeout) from error
    now_us, replies = _now_us(store, replies)
    return view.build(store, key, replies, now_us, _wall(store, now_us), meta)


def _metas(store: RedisStore, raw: dict[Any, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for field, value in raw.items():
        concern, _, key = text(field).partition(":")
        try:
            found[(concern, key)] = json.loads(text(value))
        except ValueError:
            continue
    # This process's own backends know their numbers even before the meta write lands.
    for (concern, key), backend in list(store._backends.items()):
        meta = getattr(backend, "meta", None)
        if meta is not None:
            found[(concern, key)] = meta()
    return found


def snapshot(store: RedisStore) -> Snapshot:
    """
    Read every breaker, limiter, window, pool, budget, quota and throttle of *store*'s namespace.

    Raises:
        StoreUnavailableError: Redis did not answer within the store's timeout.
    """
    known = views(store)
    try:
        names = _scan(store)
        metas = _metas(store, store.client.hgetall(meta_key(store)) or {})
        found = {hit for name in names if (hit := _split(store, name, known)) is not None}
        wanted = sorted(found | {m for m in metas if m[0] in known})
        reads: list[Read] = []
        spans: list[tuple[str, str, int]] = []
        for concern, key in wanted:
            batch = known[concern].reads(store, key)
            spans.append((concern, key, len(batch)))
            reads.extend(batch)
        replies = _pipeline(store, reads)
    except StoreUnavailableError:
        raise
    except _errors(store) as error:
        raise StoreUnavailableError(
            f"{store.namespace}:*", store=store.describe(), timeout=store.timeout
        ) from error
    now_us, replies = _now_us(store, replies)
    wall = _wall(store, now_us)
    at = 0
    records: dict[tuple[str, str], Any] = {}
    for concern, key, count in spans:
        part = replies[at : at + count]
        at += count
        record = known[concern].build(store, key, part, now_us, wall, metas.get((concern, key)))
        if record is not None:
            records[(concern, key)] = record
    return _assemble(store, records, wall)


def _assemble(store: RedisStore, records: dict[tuple[str, str], Any], wall: float) -> Snapshot:
    breakers, limiters, pools, budgets, throttles = [], [], [], [], []
    windows = {key: r for (concern, key), r in records.items() if concern == "window"}
    for (concern, key), record in records.items():
        if concern == "breaker":
            breakers.append(record)
        elif concern == "rate":
            window: LimiterSnapshot | None = windows.pop(key, None)
            if window is not None:
                limiters.append(
                    replace(
                        record,
                        window_remaining=window.window_remaining,
                        window_ends_at=window.window_ends_at,
                        saturated=record.saturated or window.saturated,
                    )
                )
            else:
                limiters.append(record)
        elif concern == "pool":
            pools.append(record)
        elif concern in ("budget", "tokens"):
            budgets.append(record)
        elif concern == "throttle":
            throttles.append(record)
    limiters.extend(windows.values())
    return Snapshot.of(wall, store.describe(), breakers, limiters, pools, budgets, throttles)


class MetaWriter:
    """
    Records declared backends' numbers in ``<ns>:meta``, off every call path.

    One daemon thread per store, started by the first declaration. It writes what is new
    as soon as it is declared (only that), and every ``idle_ttl / 2`` seconds rewrites the
    entries still alive: those whose backend this process still holds, or declared within
    ``idle_ttl``. An entry past both is deleted from the hash (another process using the
    key declares it again), so neither this process's memory nor the hash grows with keys
    used once; at most ``MAX_ENTRIES`` are kept, the oldest declared dropped first.
    """

    MAX_ENTRIES: ClassVar[int] = 100_000

    __slots__ = (
        "_done",
        "_entries",
        "_fresh",
        "_gone",
        "_lock",
        "_pid",
        "_store",
        "_thread",
        "_version",
        "_wake",
        "_written",
    )

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._entries: dict[str, tuple[str, float]] = {}  # field -> (JSON, declared at)
        self._fresh: set[str] = set()
        self._gone: set[str] = set()
        self._version = self._written = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def declare(self, concern: str, key: str, meta: dict[str, Any]) -> None:
        """Record *meta* for *concern*/*key* soon."""
        field = f"{concern}:{key}"
        with self._lock:
            self._entries.pop(field, None)  # re-inserted last: the dict stays in age order
            self._entries[field] = (json.dumps(meta), time.monotonic())
            self._fresh.add(field)
            self._gone.discard(field)
            while len(self._entries) > self.MAX_ENTRIES:
                oldest = next(iter(self._entries))
                del self._entries[oldest]
                self._fresh.discard(oldest)
                self._gone.add(oldest)
            self._version += 1
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid, self._thread = os.getpid(), None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="resilience-meta", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        refresh = self._store.idle_ttl / 2
        full = True
        while not self._done.is_set():
            with contextlib.suppress(Exception):  # advisory: never die, try next round
                self.flush(full=full)
            full = not self._wake.wait(refresh)  # woken by a declaration: only what is new
            self._wake.clear()

    def _expire(self) -> None:
        """Move the entries neither held nor declared within ``idle_ttl`` to ``_gone``."""
        horizon = time.monotonic() - self._store.idle_ttl
        held = {f"{concern}:{key}" for concern, key in list(self._store._backends)}
        for field, (_, declared) in list(self._entries.items()):
            if declared < horizon and field not in held:
                del self._entries[field]
                self._gone.add(field)

    def flush(self, *, full: bool = True) -> None:
        """Write the new entries (*full*: every live one) now; errors wait for the next round."""
        store = self._store
        with self._lock:
            if full:
                self._expire()
                fields = set(self._entries)
            else:
                fields = set(self._fresh)
            mapping = {f: self._entries[f][0] for f in fields if f in self._entries}
            gone = set(self._gone)
            version = self._version
        if not mapping and not gone:
            with self._lock:
                self._written = max(self._written, version)
            return
        try:
            pipe = store.client.pipeline(transaction=False)
            if mapping:
                pipe.hset(meta_key(store), mapping=mapping)
            if gone:
                pipe.hdel(meta_key(store), *gone)
            pipe.pexpire(meta_key(store), store.ttl_ms)
            pipe.execute()
        except Exception:  # unreachable, read-only, closed: try again next round
            # This thread must never die of it, nor disturb the application: the meta
            # hash is advisory (a snapshot shows the numbers it lacks as unknown).
            return
        with self._lock:
            self._fresh -= fields
            self._gone -= gone
            self._written = max(self._written, version)

    def settle(self, timeout: float = 1.0) -> None:
        """Wait until what was declared is written (or *timeout* passed)."""
        if self._thread is None:
            return
        pause = threading.Event()
        for _ in range(int(timeout / 0.01)):
            with self._lock:
                if self._written >= self._version:
                    return
            pause.wait(0.01)

    def forget(self) -> None:
        """Drop every entry (the store was cleared)."""
        with self._lock:
            self._entries.clear()
            self._fresh.clear()
            self._gone.clear()
            self._written = self._version

    def __len__(self) -> int:
        return len(self._entries)

    def stop(self) -> None:
        """End the thread (the store is closing)."""
        self._done.set()
        self._wake.set()
