"""
Asyncio scripts on a Redis Cluster: the store's ``ClusterRouter`` against redis-py's own client.

    python -m benchmarks.cluster_async      # prints markdown; writes results/cluster_async.md

Starts its own 3-primary cluster on free loopback ports (never the shared 6379), then:

- cost per script: the store's ``ClusterRouter.run`` (a one-key ``EVALSHA`` sent to the
  slot's primary: what ``RedisStore.arun`` awaits on a cluster, inside the same deadline and
  error mapping it had around the library's client) and ``redis.asyncio.RedisCluster.evalsha``
  (the same script and keys, the client initialised first and with no retries, as the store
  used it), interleaved
  round after round, 1 task and 20 tasks at once; medians of the rounds of the client's CPU
  per script (``time.process_time``: what the process spends, which other processes on a
  busy machine do not inflate) and of the wall time per script;
- answers against scripts run: 50 tasks making 20 scripts each at once on a fresh client
  (the first commands are sent before it knows the slot map, as in an application that
  starts its tasks at once), for the store and for ``RedisCluster``; the scripts run are
  counted by the servers (``INFO commandstats``: calls less failed calls).
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.asyncio

from redis.asyncio.cluster import ClusterNode, RedisCluster

from resilience.stores import RedisStore


RESULTS = pathlib.Path(__file__).parent / "results" / "cluster_async.md"
SCRIPT = "return 1"
ROUNDS = 9
PER_ROUND = 300  # scripts per contender and round


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def cluster() -> Iterator[list[int]]:
    """The ports of a fresh 3-primary cluster, every slot covered; killed at the end."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        sys.exit("needs redis-server and redis-cli on PATH")
    ports = [_free_port() for _ in range(3)]
    processes = []
    with tempfile.TemporaryDirectory() as directory:
        try:
            for port in ports:
                args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
                args += ["--appendonly", "no", "--cluster-enabled", "yes"]
                args += ["--cluster-config-file", f"nodes-{port}.conf"]
                processes.append(subprocess.Popen(args, cwd=directory, stdout=subprocess.DEVNULL))
            for port in ports:
                _until(lambda port=port: redis.Redis(port=port).ping())
            create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
            subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True)
            for port in ports:
                _until(
                    lambda port=port: (
                        redis.Redis(port=port).cluster("info")["cluster_state"] == "ok"
                    )
                )
            yield ports
        finally:
            for process in processes:
                process.kill()
                process.wait(5)


def _until(check: Callable[[], Any], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except redis.exceptions.ConnectionError:
            pass
        if time.monotonic() > deadline:
            sys.exit("the cluster did not come up")
        time.sleep(0.05)


def _scripts_run(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with redis.Redis(port=port) as client:
            stats = client.info("commandstats")
        for name in ("evalsha", "eval"):
            entry = stats.get(f"cmdstat_{name}", {})
            total += entry.get("calls", 0) - entry.get("failed_calls", 0)
    return total


def _library_client(port: int) -> RedisCluster:
    retry = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)], retry=retry)


async def _timed(one: Callable[[int, int], Awaitable[Any]], tasks: int) -> tuple[float, float]:
    """(client CPU, wall) seconds per script for *tasks* tasks making PER_ROUND in all."""
    each = PER_ROUND // tasks

    async def task(index: int) -> None:
        for step in range(each):
            await one(index, step)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task(index) for index in range(tasks)))
    done = tasks * each
    return (time.process_time() - cpu) / done, (time.perf_counter() - wall) / done


async def cost(port: int) -> list[str]:
    """Rows of the cost table: medians of interleaved rounds."""
    store = RedisStore(f"redis://127.0.0.1:{port}", cluster=True, namespace="bench-cluster")
    keys = [store.key("bench", f"k{index}") for index in range(16)]
    sha = store._sha(SCRIPT)
    library = _library_client(port)
    await library.initialize()

    router = store._async_client()  # what the store's arun awaits on a cluster

    async def ours(index: int, step: int) -> Any:
        return await router.run(SCRIPT, sha, [keys[(index + step) % 16]], ())

    async def theirs(index: int, step: int) -> Any:
        return await library.evalsha(sha, 1, keys[(index + step) % 16])

    for key in keys:  # connected to every primary, the script loaded everywhere
        await ours(0, keys.index(key))
        await library.eval(SCRIPT, 1, key)
    rows = []
    try:
        for tasks in (1, 20):
            samples: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
            for round_ in range(ROUNDS):
                pair = [("ours", ours), ("theirs", theirs)]
                for name, one in pair if round_ % 2 == 0 else pair[::-1]:
                    samples[name].append(await _timed(one, tasks))
            cpu = {n: statistics.median(c for c, _ in s) * 1e6 for n, s in samples.items()}
            wall = {n: statistics.median(w for _, w in s) * 1e6 for n, s in samples.items()}
            rows.append(
                f"| {tasks} | {cpu['ours']:.1f} | {cpu['theirs']:.1f} | "
                f"{cpu['ours'] / cpu['theirs']:.2f}x | {wall['ours']:.1f} | "
                f"{wall['theirs']:.1f} | {wall['ours'] / wall['theirs']:.2f}x |"
            )
    finally:
        await library.aclose()
        await store.aclose()
        store.close()
    return rows


async def burst(ports: list[int], *, ours: bool, tasks: int = 50, each: int = 20) -> str:
    """One burst of *tasks* x *each* scripts on a fresh client: answers, errors, scripts run."""
    store = RedisStore(
        f"redis://127.0.0.1:{ports[0]}", cluster=True, namespace=f"bench-{uuid.uuid4().hex[:8]}"
    )
    keys = [store.key("burst", f"k{index}") for index in range(8)]
    library = _library_client(ports[0])
    answered = failed = 0

    async def task(index: int) -> None:
        nonlocal answered, failed
        for _ in range(each):
            try:
                key = keys[index % len(keys)]
                if ours:
                    await store.arun(SCRIPT, [key], [], key="burst")
                else:
                    await library.eval(SCRIPT, 1, key)
                answered += 1
            except Exception:  # counted: the point of the row
                failed += 1

    before = _scripts_run(ports)
    try:
        await asyncio.gather(*(task(index) for index in range(tasks)))
    finally:
        await library.aclose()
        await store.aclose()
        store.close()
    ran = _scripts_run(ports) - before
    who = "RedisStore.arun" if ours else f"redis.asyncio.RedisCluster (redis {redis.__version__})"
    return f"| {who} | {tasks} x {each} | {answered} | {failed} | {ran} |"


def main() -> None:
    with cluster() as ports:
        rows = asyncio.run(cost(ports[0]))
        bursts = [asyncio.run(burst(ports, ours=flag)) for flag in (True, False)]
    load = " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    lines = [
        "# Asyncio scripts on a Redis Cluster",
        "",
        f"`python -m benchmarks.cluster_async` (load average after the run: {load}).",
        "",
        f"Cost per one-key `EVALSHA`, medians of {ROUNDS} interleaved rounds of {PER_ROUND}:",
        "",
        "| tasks | router CPU µs | RedisCluster CPU µs | ratio | router wall µs "
        "| RedisCluster wall µs | ratio |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "A burst on a fresh client (scripts run: counted by the servers):",
        "",
        "| client | tasks x scripts | answered | failed | scripts run |",
        "|---|---|---|---|---|",
        *bursts,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
