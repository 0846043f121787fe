"""
Shared state at scale: ours against ``limits`` on one private Redis server.

    python -m benchmarks.redis_scale            # prints markdown; writes results/redis.md

Starts its own ``redis-server`` on a free loopback port (never the shared 6379), then
measures, for a rate decision with room (ours: ``@rate_limited`` on a ``RedisStore``;
limits: ``MovingWindowRateLimiter`` on ``RedisStorage``, the same server):

- decisions per second with 1, 2 and 4 processes hitting one key;
- Redis commands per decision (``INFO commandstats``: every command, a script's own too)
  and Redis CPU per decision (``INFO cpu`` user + sys of the server process: parsing,
  scripts, networking), over the same decisions;
- bytes per idle key (``MEMORY USAGE`` of every key one limiter leaves after 100 decisions);
- round trips per healthy breaker call over 10,000 calls (``EVALSHA`` calls counted by the
  server; every command too, the change feed's heartbeat PINGs included), in
  consecutive-failure mode with the local state (the default) and with
  ``local_breakers=False``, and in failure-rate mode batched (``sync_interval=0.1``, the
  default) and per call (``sync_interval=0``).

    python -m benchmarks.redis_scale --breakers   # only the breaker rows (prints only)
"""

from __future__ import annotations

import multiprocessing
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from typing import Any

import redis

from resilience import circuit_breaker, rate_limited
from resilience.stores import RedisStore


HUGE = 10**7
DECISIONS = 3000
OUT = pathlib.Path(__file__).resolve().parent / "results" / "redis.md"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start() -> tuple[subprocess.Popen[bytes], int, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not on PATH"
        raise SystemExit(msg)
    port = _free_port()
    workdir = tempfile.mkdtemp()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.1) as client:
                client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    return process, port, f"redis://127.0.0.1:{port}/0"


def _ours(url: str, key: str) -> Any:
    store = RedisStore(url, namespace="bench", idle_ttl=60.0)
    return rate_limited(rate=HUGE, per=1.0, key=key, store=store)(lambda: 1)


def _limits(url: str, key: str) -> Any:
    from limits import RateLimitItemPerSecond, storage, strategies

    limiter = strategies.MovingWindowRateLimiter(storage.RedisStorage(url))
    item = RateLimitItemPerSecond(HUGE)

    def call() -> int:
        if not limiter.hit(item, key):
            raise RuntimeError("limited")
        return 1

    return call


MAKERS = {"resilience": _ours, "limits (moving window)": _limits}


def _worker(name: str, url: str, key: str, calls: int, barrier: Any, out: Any) -> None:
    call = MAKERS[name](url, key)
    call()
    barrier.wait()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    out.put(time.perf_counter() - started)


def decisions_per_second(name: str, url: str, processes: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    key = f"dps-{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(target=_worker, args=(name, url, key, DECISIONS, barrier, out))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    took = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    return processes * DECISIONS / max(took)


def _stats(client: redis.Redis) -> tuple[int, float, int]:
    """(commands so far, server CPU seconds so far, EVALSHA calls so far)."""
    commands = client.info("commandstats")
    cpu = client.info("cpu")
    total = sum(
        int(row["calls"])
        for name, row in commands.items()
        if name not in ("cmdstat_info", "cmdstat_config")
    )
    evalsha = int(commands.get("cmdstat_evalsha", {}).get("calls", 0))
    return total, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), evalsha


def cost_per_decision(client: redis.Redis, name: str, url: str) -> tuple[float, float]:
    """(Redis commands, Redis CPU microseconds) per decision, one process."""
    call = MAKERS[name](url, f"cost-{uuid.uuid4().hex[:6]}")
    for _ in range(50):
        call()
    before = _stats(client)
    for _ in range(DECISIONS):
        call()
    after = _stats(client)
    return (after[0] - before[0] - 1) / DECISIONS, (after[1] - before[1]) * 1e6 / DECISIONS


def bytes_per_idle_key(client: redis.Redis, name: str, url: str) -> tuple[int, int]:
    """(keys, bytes) one limiter leaves in Redis after 100 decisions."""
    key = f"mem-{uuid.uuid4().hex[:6]}"
    call = MAKERS[name](url, key)
    for _ in range(100):
        call()
    names = list(client.scan_iter(match=f"*{key}*", count=1000))
    return len(names), sum(int(client.memory_usage(n) or 0) for n in names)


def breaker_round_trips(
    client: redis.Redis, url: str, calls: int = 10_000, **options: Any
) -> tuple[float, float, int]:
    """
    Per healthy breaker call over *calls* calls, counted by the server: (scripts, every
    command, spells of late heartbeats). *options* go to the breaker (``failure_rate=...``)
    and to the store (``local_breakers``, ``sync_interval``).
    """
    store_options = {k: options.pop(k) for k in ("local_breakers", "sync_interval") if k in options}
    store = RedisStore(url, namespace="bench", idle_ttl=60.0, **store_options)

    @circuit_breaker(name=f"healthy-{uuid.uuid4().hex[:6]}", store=store, **options)
    def healthy() -> int:
        return 1

    healthy()
    deadline = time.monotonic() + 5
    while store._listener is not None and not store._listener.live:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    healthy()
    store.flush()
    listener = store._listener  # the change feed, if this breaker keeps local state
    late = listener.late if listener is not None else 0
    before = _stats(client)
    for _ in range(calls):
        healthy()
    store.flush()  # a batch still waiting counts too
    after = _stats(client)
    late = (listener.late if listener is not None else 0) - late
    store.close()
    return (after[2] - before[2]) / calls, (after[0] - before[0]) / calls, late


def _breaker_lines(client: redis.Redis, url: str) -> list[str]:
    """Round trips per healthy breaker call, each way a breaker can run, three runs each."""
    rows = [
        ("consecutive mode, default (local state)", {}),
        ("consecutive mode, `local_breakers=False`", {"local_breakers": False}),
        (
            "failure-rate mode, default (`sync_interval=0.1`)",
            {"failure_rate": 0.5, "window_size": 100},
        ),
        (
            "failure-rate mode, `sync_interval=0`",
            {"failure_rate": 0.5, "window_size": 100, "sync_interval": 0.0},
        ),
    ]
    lines = []
    for title, options in rows:
        runs = [breaker_round_trips(client, url, **dict(options)) for _ in range(3)]
        scripts = sorted(run[0] for run in runs)[1]
        commands = sorted(run[1] for run in runs)[1]
        late = sum(run[2] for run in runs)
        lines.append(
            f"| round trips / healthy breaker call, {title} (10,000 calls, median of 3; "
            f"all commands incl. heartbeat {commands:.4f}; late heartbeats {late}) | "
            f"{scripts:.4f} | n/a | |"
        )
    return lines


def main() -> None:
    process, port, url = _start()
    client = redis.Redis(port=port)
    if "--breakers" in sys.argv[1:]:
        try:
            print("\n".join(["| measure | resilience | | |", "|---|---:|---:|---:|"]))
            print("\n".join(_breaker_lines(client, url)))
        finally:
            client.close()
            process.kill()
            process.wait(5)
        return
    lines = [
        f"# Redis at scale: resilience vs limits (one private redis-server, {DECISIONS} "
        "decisions per measurement)",
        "",
        "| measure | resilience | limits (moving window) | ratio |",
        "|---|---:|---:|---:|",
    ]
    try:
        for processes in (1, 2, 4):
            ours = decisions_per_second("resilience", url, processes)
            theirs = decisions_per_second("limits (moving window)", url, processes)
            lines.append(
                f"| decisions/s, {processes} process(es), one key | {ours:,.0f} | "
                f"{theirs:,.0f} | {ours / theirs:.2f}x |"
            )
        ours_cost = cost_per_decision(client, "resilience", url)
        theirs_cost = cost_per_decision(client, "limits (moving window)", url)
        lines.append(
            f"| Redis commands / decision | {ours_cost[0]:.2f} | {theirs_cost[0]:.2f} | "
            f"{ours_cost[0] / theirs_cost[0]:.2f}x |"
        )
        lines.append(
            f"| Redis CPU us / decision | {ours_cost[1]:.1f} | {theirs_cost[1]:.1f} | "
            f"{ours_cost[1] / theirs_cost[1]:.2f}x |"
        )
        ours_mem = bytes_per_idle_key(client, "resilience", url)
        theirs_mem = bytes_per_idle_key(client, "limits (moving window)", url)
        lines.append(
            f"| bytes per idle limiter after 100 decisions (keys) | {ours_mem[1]} "
            f"({ours_mem[0]}) | {theirs_mem[1]} ({theirs_mem[0]}) | "
            f"{ours_mem[1] / max(theirs_mem[1], 1):.2f}x |"
        )
        lines += _breaker_lines(client, url)
    finally:
        client.close()
        process.kill()
        process.wait(5)
    report = "\n".join(lines) + "\n"
    print(report)
    OUT.write_text(report)


if __name__ == "__main__":
    main()
