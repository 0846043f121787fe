"""
The asyncio path to a Redis Cluster (``stores._redis_cluster.ClusterRouter``), on a real one.

Many tasks at once get every answer, and the servers ran exactly the scripts answered (the
library's asyncio cluster client loses replies of scripts that ran under such a load, in
redis-py 8.0 and 8.1); a given asyncio cluster client's settings are the ones used; a slot
being migrated (``ASK``) and then moved (``MOVED``) is followed without a failed call.
"""

from __future__ import annotations

import asyncio
import uuid

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster

from resilience import rate_limited
from resilience.stores import RedisStore

from ..redis_servers import Server


COUNT = "redis.call('INCR', KEYS[1]) return 1"
"""A script that counts, on the server, every time it runs."""

TASKS, EACH = 50, 20


@pytest.fixture(name="nodes")
def _nodes(redis_servers: Any) -> list[Server]:
    nodes: list[Server] = redis_servers.cluster()
    return nodes


@pytest.fixture(name="cluster_store")
def _cluster_store(nodes: list[Server]) -> Iterator[RedisStore]:
    store = RedisStore(
        f"redis://127.0.0.1:{nodes[0].port}",
        cluster=True,
        namespace=f"router-{uuid.uuid4().hex[:10]}",
        timeout=10.0,  # no test here is about time: a loaded 2-core machine
    )
    yield store
    store.clear()
    store.close()


def _scripts_run(nodes: list[Server]) -> int:
    """
    Scripts the primaries have run so far (``INFO commandstats``): EVAL and EVALSHA calls
    but those that failed (an EVALSHA answered NOSCRIPT, which the caller follows with EVAL).
    """
    total = 0
    for node in nodes:
        with node.client() as client:
            stats = client.info("commandstats")
        for name in ("evalsha", "eval"):
            entry = stats.get(f"cmdstat_{name}", {})
            total += entry.get("calls", 0) - entry.get("failed_calls", 0)
    return total


def test_many_tasks_get_every_answer_and_nothing_runs_twice(cluster_store, nodes):
    """50 tasks x 20 scripts over 8 keys: 1000 answers, 1000 scripts run, counted twice."""
    store = cluster_store
    keys = [store.key("probe", f"k{index}") for index in range(8)]
    errors: Counter[str] = Counter()
    answered = 0

    async def task(index: int) -> None:
        nonlocal answered
        for _ in range(EACH):
            try:
                await store.arun(COUNT, [keys[index % len(keys)]], [], key="probe")
                answered += 1
            except Exception as error:  # counted: the assertion below shows them
                errors[repr(error)[:120]] += 1

    async def main() -> None:
        try:
            await asyncio.gather(*(task(index) for index in range(TASKS)))
        finally:
            await store.aclose()

    before = _scripts_run(nodes)
    asyncio.run(main())
    ran = _scripts_run(nodes) - before
    counted = sum(int(store.client.get(key) or 0) for key in keys)
    assert {} == dict(errors)
    assert TASKS * EACH == answered == counted == ran


def test_many_tasks_decide_through_a_limiter(cluster_store, nodes):
    """50 tasks x 20 rate-limited calls (room for all): all admitted, one script each."""
    store = cluster_store
    starts = 0

    @rate_limited(rate=10_000, per=60.0, key="api", store=store, timeout=0)
    async def call() -> None:
        nonlocal starts
        starts += 1

    async def main() -> None:
        async def task() -> None:
            for _ in range(EACH):
                await call()

        try:
            await asyncio.gather(*(task() for _ in range(TASKS)))
        finally:
            await store.aclose()

    before = _scripts_run(nodes)
    asyncio.run(main())
    ran = _scripts_run(nodes) - before
    assert TASKS * EACH == starts == ran


@pytest.mark.parametrize("how", ["alone", "pair"])
def test_a_given_async_cluster_client_lends_its_settings(nodes, how):
    """An asyncio cluster client given (alone or in a pair): its client name is the one used."""
    name = f"mine-{uuid.uuid4().hex[:6]}"
    given = redis.asyncio.RedisCluster(host="127.0.0.1", port=nodes[1].port, client_name=name)
    sync = redis.cluster.RedisCluster(host="127.0.0.1", port=nodes[2].port, socket_timeout=10)
    namespace = f"router-{uuid.uuid4().hex[:10]}"
    store = RedisStore(given if how == "alone" else (sync, given), namespace=namespace, timeout=10)
    key = store.key("probe", "named")
    owner = store.client.get_node_from_key(key)

    async def main() -> str:
        try:
            assert 1 == await store.arun(COUNT, [key], [], key="named")
            router = store._async_client()  # the one that ran it
            (seen,) = await router.node((owner.host, int(owner.port))).call(("CLIENT", "GETNAME"))
            return seen.decode()
        finally:
            await store.aclose()
            await given.aclose()

    try:
        assert name == asyncio.run(main())
        assert 1 == int(store.client.get(key) or 0)
    finally:
        store.clear()
        store.close()
        sync.close()


@pytest.mark.usefixtures("discarded_nodes_collected")  # the sync client's, after the move
def test_a_slot_migrated_then_moved_is_followed(cluster_store, nodes):
    """ASK while the slot migrates (the new key lands on the importer), MOVED once it has."""
    store = cluster_store
    key = store.key("probe", f"migrating-{uuid.uuid4().hex[:6]}")
    slot = store.client.keyslot(key)
    owner = store.client.get_node_from_key(key)
    source = next(node for node in nodes if node.port == owner.port)
    target = next(node for node in nodes if node.port != owner.port)
    ids = {}
    for node in (source, target):
        with node.client() as client:
            ids[node.port] = client.execute_command("CLUSTER", "MYID").decode()

    def setslot(node: Server, *how: str) -> None:
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, *how)

    async def twice() -> list[Any]:
        try:
            first = await store.arun(COUNT, [key], [], key="migrating")  # learns the map
            with source.client() as client:
                client.delete(key)  # a slot with a key cannot change hands
            setslot(target, "IMPORTING", ids[source.port])
            setslot(source, "MIGRATING", ids[target.port])
            during = await store.arun(COUNT, [key], [], key="migrating")  # ASK: on the target
            for node in nodes:
                setslot(node, "NODE", ids[target.port])
            after = await store.arun(COUNT, [key], [], key="migrating")  # MOVED: the target
            return [first, during, after]
        finally:
            await store.aclose()

    try:
        assert [1, 1, 1] == asyncio.run(twice())
        with target.client() as client:
            assert 2 == int(client.get(key) or 0)  # the two after the migration began
            client.delete(key)
    finally:
        for node in nodes:  # the slot goes home (it holds no key now)
            setslot(node, "NODE", ids[source.port])
        with source.client() as client:
            client.delete(key)


def test_a_script_without_keys_runs_on_a_primary(cluster_store):
    """No key, no slot: any primary runs it (ours always name their keys)."""

    async def main() -> Any:
        try:
            return await cluster_store.arun("return 7", [], [], key="none")
        finally:
            await cluster_store.aclose()

    assert 7 == asyncio.run(main())


def test_a_given_sync_cluster_client_lends_its_settings_to_the_copy(nodes):
    """A cluster client with no timeouts is copied with the store's: its settings kept too."""
    name = f"copied-{uuid.uuid4().hex[:6]}"
    given = redis.cluster.RedisCluster(host="127.0.0.1", port=nodes[0].port, client_name=name)
    store = RedisStore(given, namespace=f"router-{uuid.uuid4().hex[:10]}", timeout=10.0)
    key = store.key("probe", "copied")
    owner = store.client.get_node_from_key(key)

    async def main() -> str:
        try:
            assert 1 == await store.arun(COUNT, [key], [], key="copied")
            router = store._async_client()
            (seen,) = await router.node((owner.host, int(owner.port))).call(("CLIENT", "GETNAME"))
            return str(seen.decode())
        finally:
            await store.aclose()

    try:
        assert store.client is not given  # bounded: the store's own copy
        assert name == store.client.get_redis_connection(owner).client_getname()
        assert name == asyncio.run(main())
    finally:
        store.clear()
        store.close()
        given.close()


@pytest.mark.parametrize("given", ["sync client", "async client", "rediss URL"])
def test_a_tls_cluster_sync_and_async(redis_servers, given):
    """On a TLS-only cluster, whoever built the client: sync and async decisions, all TLS."""
    nodes = redis_servers.cluster("tls-cluster", tls=True)
    ca = nodes[0].tls["ssl_ca_certs"]
    port = nodes[0].port
    namespace = f"router-{uuid.uuid4().hex[:10]}"
    if given == "sync client":
        client: Any = redis.cluster.RedisCluster(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca
        )
    elif given == "async client":
        client = redis.asyncio.RedisCluster(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=ca)
    else:
        client = f"rediss://127.0.0.1:{port}?ssl_ca_certs={ca}"
    store = RedisStore(client, cluster=isinstance(client, str), namespace=namespace, timeout=10)
    starts = 0

    @rate_limited(rate=10_000, per=60.0, key="tls", store=store, timeout=0)
    def sync_call() -> None:
        nonlocal starts
        starts += 1

    @rate_limited(rate=10_000, per=60.0, key="tls", store=store, timeout=0)
    async def async_call() -> None:
        nonlocal starts
        starts += 1

    async def main() -> None:
        try:
            await asyncio.gather(*(async_call() for _ in range(50)))
        finally:
            await store.aclose()

    try:
        sync_call()
        asyncio.run(main())
        assert 51 == starts
        assert store.key("rate", "tls", "log") in store._scan(f"{namespace}:*")
    finally:
        store.clear()
        store.close()
        if given == "sync client":
            client.close()
