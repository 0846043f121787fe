"""
Shared state at scale: ours against ``limits`` on one private Redis server.

    python -m benchmarks.redis_scale            # prints markdown; writes results/redis.md

Starts its own ``redis-server`` on a free loopback port (never the shared 6379), then
measures, for a rate decision with room (ours: ``@rate_limited`` on a ``RedisStore``;
limits: ``MovingWindowRateLimiter`` on ``RedisStorage``, the same server), ours and limits'
interleaved round after round, medians of the rounds:

- decisions per second with 1, 2 and 4 processes hitting one key: the processes are started
  once, and each round they leave one barrier together and make a fixed number of
  decisions; a round's rate is all their decisions over the span from the barrier to the
  last one done;
- Redis commands per decision (``INFO commandstats``: every command, a script's own too)
  and Redis CPU per decision, both as the scripts' own time (``usec`` of ``EVALSHA``, which
  includes the commands it runs: the only command either side sends) and as the server
  process's CPU (``INFO cpu`` user + sys: parsing, scripts, networking);
- the floor of a one-key design (``floor_probe``): the same ``usec`` for a script that runs
  only ``TIME`` + ``GET`` + ``SET PX`` (the fewest commands a strict rule on the server's
  clock can run) and for the leanest packed one-key rate script we wrote;
- bytes per idle key (``MEMORY USAGE`` of every key one limiter leaves after 100 decisions);
- round trips per healthy breaker call over 10,000 calls (``EVALSHA`` calls counted by the
  server; every command too, the change feed's heartbeat PINGs included), in
  consecutive-failure mode with the local state (the default) and with
  ``local_breakers=False``, and in failure-rate mode batched (``sync_interval=0.1``, the
  default) and per call (``sync_interval=0``).

    python -m benchmarks.redis_scale --breakers   # only the breaker rows (prints only)
    python -m benchmarks.redis_scale --rate       # only the rate rows and the floor (prints only)
"""

from __future__ import annotations

import multiprocessing
import pathlib
import shutil
import socket
import statistics
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
ROUNDS = 7  # of decisions per second, ours and limits' alternating; the report gives medians
ROUND_DECISIONS = 200  # per process per round of decisions per second
COST_ROUNDS = 21  # of the cost rows: many short rounds, so a preempted one moves no median
DECISIONS = 300  # per round of the cost rows
FLOOR_ROUNDS = 7
FLOOR_DECISIONS = 300  # per round of the floor probe
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


PROCESSES = (1, 2, 4)


def _worker(url: str, tag: str, orders: Any, barriers: dict[int, Any], out: Any) -> None:
    """One process: on each order (side, process count), leave that barrier and decide."""
    calls = {name: make(url, f"dps-{tag}-{name[:6]}") for name, make in MAKERS.items()}
    for call in calls.values():
        call()
    out.put(None)
    while (order := orders.get(timeout=300)) is not None:
        name, processes = order
        call = calls[name]
        barriers[processes].wait()
        began = time.perf_counter()
        for _ in range(ROUND_DECISIONS):
            call()
        out.put((began, time.perf_counter()))


def decisions_per_second(url: str) -> dict[int, dict[str, tuple[float, float, float]]]:
    """
    For 1, 2 and 4 processes: each side's decisions per second over ``ROUNDS`` (median and
    quartiles).

    The four processes start once; in every round each count and side takes its turn (the
    sides alternate first), its processes leaving one barrier together; a turn's rate is its
    decisions over the span from the earliest start to the last one done.
    """
    ctx = multiprocessing.get_context("spawn")
    barriers = {n: ctx.Barrier(n) for n in PROCESSES}
    out = ctx.Queue()
    tag = uuid.uuid4().hex[:6]
    workers = []
    for _ in range(max(PROCESSES)):
        orders = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(url, tag, orders, barriers, out))
        proc.start()
        workers.append((proc, orders))
    rates: dict[int, dict[str, list[float]]] = {n: {name: [] for name in MAKERS} for n in PROCESSES}
    try:
        for _ in workers:
            out.get(timeout=300)  # every process is ready
        for round_ in range(ROUNDS):
            sides = list(MAKERS) if round_ % 2 == 0 else list(reversed(MAKERS))
            for processes in PROCESSES:
                for name in sides:
                    for _, orders in workers[:processes]:
                        orders.put((name, processes))
                    spans = [out.get(timeout=300) for _ in range(processes)]
                    took = max(span[1] for span in spans) - min(span[0] for span in spans)
                    rates[processes][name].append(processes * ROUND_DECISIONS / took)
    finally:
        for proc, orders in workers:
            orders.put(None)
        for proc, _ in workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    return {
        n: {name: _spread(values) for name, values in by_side.items()}
        for n, by_side in rates.items()
    }


def _spread(values: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of *values*."""
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), low, high


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


def _script_usec(client: redis.Redis) -> tuple[int, float]:
    """(EVALSHA calls, their microseconds, nested commands included) since the last reset."""
    row = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(row.get("calls", 0)), float(row.get("usec", 0))


def _one_round(client: redis.Redis, call: Any) -> tuple[float, float, float]:
    """(commands, script us, server CPU us) per decision over ``DECISIONS`` of *call*."""
    client.config_resetstat()
    before = _stats(client)
    for _ in range(DECISIONS):
        call()
    after = _stats(client)
    calls, usec = _script_usec(client)
    if calls != DECISIONS:
        msg = f"expected one EVALSHA per decision, saw {calls} for {DECISIONS}"
        raise RuntimeError(msg)
    commands = (after[0] - before[0]) / DECISIONS
    return commands, usec / DECISIONS, (after[1] - before[1]) * 1e6 / DECISIONS


def cost_per_decision(
    client: redis.Redis, url: str
) -> tuple[dict[str, tuple[float, float, float]], list[tuple[float, float, float]]]:
    """
    Each side's medians over ``COST_ROUNDS``: (commands, script us, server CPU us) per
    decision; and the quartiles (first, median, third) of each round's ratio ours/limits'
    for the same three, a round's two sides run back to back (so under the same load).
    """
    calls = {name: make(url, f"cost-{uuid.uuid4().hex[:6]}") for name, make in MAKERS.items()}
    for call in calls.values():
        for _ in range(50):
            call()
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in MAKERS}
    for round_ in range(COST_ROUNDS):
        order = list(MAKERS) if round_ % 2 == 0 else list(reversed(MAKERS))
        for name in order:
            rows[name].append(_one_round(client, calls[name]))
    ours, theirs = (rows[name] for name in MAKERS)
    ratios = []
    for index in range(3):
        paired = [a[index] / b[index] for a, b in zip(ours, theirs, strict=True) if b[index]]
        low, mid, high = statistics.quantiles(paired, n=4, method="inclusive")
        ratios.append((low, mid, high))
    medians = {
        name: (
            statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs),
            statistics.median(r[2] for r in runs),
        )
        for name, runs in rows.items()
    }
    return medians, ratios


# -- the floor of a one-key design: the commands alone, and our leanest packed script ----------

_BARE_ONE_KEY = """
local t = redis.call('TIME')
local v = redis.call('GET', KEYS[1]) or 'x'
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
return 0
"""
"""The commands any one-key strict design runs (server clock, read, write with expiry), no rule."""

_PACKED_ONE_KEY = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local rate, per = tonumber(ARGV[1]), tonumber(ARGV[2])
local blob = redis.call('GET', KEYS[1])
local w, nl, ns = 0, 0, 0
if blob then w, nl, ns = struct.unpack('<dI4I4', blob) end
local start = now
if w > start then start = w end
if nl > 0 then
  local last = struct.unpack('<d', blob, 9 + nl * 8)
  if last > start then start = last end
  if nl >= rate then
    local f = struct.unpack('<d', blob, 17 + (nl - rate) * 8) + per
    if f > start then start = f end
  end
end
if start > now then return start - now end
if ns >= rate then
  local f = struct.unpack('<d', blob, 17 + (nl + ns - rate) * 8) + per
  if f > now then return f - now end
end
local e = struct.pack('<d', now)
if not blob then
  redis.call('SET', KEYS[1], struct.pack('<dI4I4', w, 1, 1) .. e .. e, 'PX', ARGV[3])
  return 0
end
-- every 128th entry, drop what left the window (binary search in each array)
local ls, ss = 0, 0
if (nl + 1) % 128 == 0 then
  local function live(base, n)
    local low, high = 0, n
    while low < high do
      local mid = math.floor((low + high) / 2)
      if struct.unpack('<d', blob, base + mid * 8) + per > now then high = mid else low = mid + 1 end
    end
    return low
  end
  ls, ss = live(17, nl), live(17 + nl * 8, ns)
end
local out = struct.pack('<dI4I4', w, nl - ls + 1, ns - ss + 1)
  .. string.sub(blob, 17 + ls * 8, 16 + nl * 8) .. e .. string.sub(blob, 17 + (nl + ss) * 8) .. e
redis.call('SET', KEYS[1], out, 'PX', ARGV[3])
return 0
"""
"""
The leanest one-key rate script we wrote: window end, log and starts packed in one string
(``struct``), ``TIME`` + ``GET`` + ``SET PX``, trimmed by time every 128 entries; the
immediate path of the rule only, so a lower bound on what the full rule costs in that layout.
"""


def floor_probe(client: redis.Redis, per: float) -> dict[str, float]:
    """
    Script us per decision (median of ``ROUNDS``): limits, ours, and the one-key floor.

    *per* sets how many entries a window holds at this speed (a packed string is copied
    whole on every write; lists are not).
    """
    from limits import parse, storage, strategies

    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    per_us = round(per * 1_000_000)
    theirs = strategies.MovingWindowRateLimiter(storage.RedisStorage(url))
    item = parse(f"{HUGE} per {max(1, round(per))} second")
    store = RedisStore(url, namespace="bench", idle_ttl=60.0)
    ours = rate_limited(rate=HUGE, per=per, key=f"floor-{uuid.uuid4().hex[:6]}", store=store)(
        lambda: 1
    )

    def script(source: str) -> Any:
        sha = client.script_load(source)
        key = f"bench:floor:{{{uuid.uuid4().hex[:6]}}}"
        return lambda: client.evalsha(sha, 1, key, HUGE, per_us, 60_000)

    theirs_key = f"floor-{uuid.uuid4().hex[:6]}"
    sides = {
        "limits (moving window)": lambda: theirs.hit(item, theirs_key),
        "resilience": ours,
        "TIME + GET + SET PX alone": script(_BARE_ONE_KEY),
        "packed one key, immediate path only": script(_PACKED_ONE_KEY),
    }
    usec: dict[str, list[float]] = {name: [] for name in sides}
    for call in sides.values():
        call()
    for round_ in range(FLOOR_ROUNDS):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            client.config_resetstat()
            for _ in range(FLOOR_DECISIONS):
                sides[name]()
            calls, spent = _script_usec(client)
            usec[name].append(spent / calls)
    store.close()
    return {name: statistics.median(values) for name, values in usec.items()}


def past_the_rate(client: redis.Redis, url: str) -> tuple[float, float, float]:
    """
    Ours when a list holds more entries than the rate (rate 64 per 2 ms, room most of the
    time): (commands, script us, share refused) per decision, medians of ``FLOOR_ROUNDS``.
    Then the immediate path also reads each list at -rate-1 (limits reads its one at -limit).
    """
    from resilience._rate.redis import RedisRateBackend

    store = RedisStore(url, namespace="bench", idle_ttl=60.0)
    backend = RedisRateBackend(store, f"past-{uuid.uuid4().hex[:6]}", 64, 0.002, None)
    for _ in range(300):
        backend.reserve(0.0)
    rows = []
    for _ in range(FLOOR_ROUNDS):
        client.config_resetstat()
        refused = sum(backend.reserve(0.0) != 0.0 for _ in range(FLOOR_DECISIONS))
        stats = client.info("commandstats")
        total = sum(
            int(row["calls"])
            for name, row in stats.items()
            if name not in ("cmdstat_info", "cmdstat_config")
        )
        calls, usec = _script_usec(client)
        rows.append((total / calls, usec / calls, refused / FLOOR_DECISIONS))
    store.close()
    return (
        statistics.median(r[0] for r in rows),
        statistics.median(r[1] for r in rows),
        statistics.median(r[2] for r in rows),
    )


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


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def _cell(spread: tuple[float, float, float]) -> str:
    mid, low, high = spread
    return f"{mid:,.0f} ({low:,.0f}-{high:,.0f})"


def rate_rows(client: redis.Redis, url: str) -> list[str]:
    """The rate rows of the report: throughput, commands, CPU and memory per decision."""
    ours, theirs = MAKERS
    lines = []
    for processes, rates in decisions_per_second(url).items():
        lines.append(
            f"| decisions/s, {processes} process(es), one key (median, quartiles) | "
            f"{_cell(rates[ours])} | {_cell(rates[theirs])} | "
            f"{_ratio(rates[ours][0], rates[theirs][0])} |"
        )
    cost, ratios = cost_per_decision(client, url)
    for index, (what, digits) in enumerate(
        (
            ("Redis commands / decision", 2),
            ("Redis CPU us / decision: the script (`EVALSHA` usec)", 1),
            ("Redis CPU us / decision: the server process (`INFO cpu`)", 1),
        )
    ):
        mine, other = cost[ours][index], cost[theirs][index]
        low, mid, high = ratios[index]
        lines.append(
            f"| {what} | {mine:.{digits}f} | {other:.{digits}f} | {_ratio(mine, other)} "
            f"(rounds: {mid:.2f}x, {low:.2f}-{high:.2f}x) |"
        )
    ours_mem = bytes_per_idle_key(client, ours, url)
    theirs_mem = bytes_per_idle_key(client, theirs, url)
    lines.append(
        f"| bytes per idle limiter after 100 decisions (keys) | {ours_mem[1]} "
        f"({ours_mem[0]}) | {theirs_mem[1]} ({theirs_mem[0]}) | "
        f"{_ratio(ours_mem[1], theirs_mem[1])} |"
    )
    return lines


NOTES = """
How to read it: one run on a shared machine; decisions/s move with the machine's load far
more than the costs do (the quartiles show how far), so trust the cost rows and their
per-round ratios (a round runs the two sides back to back, so under the same load), and
repeat before believing a throughput ratio.

- Commands: ours are `EVALSHA` + `TIME` + `LINDEX` (the log's newest entry: a reservation
  ahead, or the backoff window's flag) + 2 `RPUSH` (the log, the starts), plus about 0.02
  for the amortized trim by time (a binary search and an `LTRIM` every 128 entries) and the
  expiries (two `PEXPIRE` per bucket of time, at most 1 s); limits' are `EVALSHA` +
  `LINDEX` + `LPUSH` + `LTRIM` + `EXPIRE`. Once a list holds more entries than the rate,
  ours also reads each list at -rate-1 (the last line above; limits reads at -limit).
- At the same count, ours does what limits' does not: the server's clock (`TIME`; limits
  takes each client's), the backoff window and the queue of reservations (both told by the
  one `LINDEX`), and a second log of actual starts, so the rule holds where calls begin.
  Its common decision runs inline before any Lua function is defined (the general path's
  closures cost about two commands per call) and reads no argument it does not need.
- With a 5 ms window (the floor table's first column) ours costs about limits' (0.91-1.19x
  over six runs, against 0.81-0.95x with 1 s): there a trim by time empties most of the
  list about every 100 decisions, each a binary search of a few `LINDEX` and an `LTRIM`.
- The floor of one key: `TIME` + `GET` + `SET PX` alone cost about half of limits'
  decision, but the strict rule in that layout packs the logs in one string that every
  decision copies whole (its leanest form, above: 1.4-1.9x with a few entries in the window
  and 8-12x with thousands), so lists stay.
"""


FLOOR_PERS = (0.005, 1.0)
"""Windows for the floor probe: a few entries live at this speed, and thousands."""


def floor_rows(client: redis.Redis) -> list[str]:
    """The floor table: script us per decision of limits, ours and the one-key designs."""
    probes = {per: floor_probe(client, per) for per in FLOOR_PERS}
    names = list(probes[FLOOR_PERS[0]])
    base = names[0]
    lines = [
        "",
        "The floor of one key per limiter: script us per decision (`EVALSHA` usec, median of "
        f"{FLOOR_ROUNDS} rounds of {FLOOR_DECISIONS}), rate {HUGE:.0e} per *per*, so every "
        "decision has room; the ratio is to limits' in the same column.",
        "",
        "| script | " + " | ".join(f"per = {per:g} s" for per in FLOOR_PERS) + " |",
        "|---|" + "---:|" * len(FLOOR_PERS),
    ]
    for name in names:
        cells = [
            f"{probes[per][name]:.1f} ({_ratio(probes[per][name], probes[per][base])})"
            for per in FLOOR_PERS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
    commands, usec, refused = past_the_rate(client, url)
    lines += [
        "",
        f"Lists longer than the rate (ours, rate 64 per 2 ms, {refused:.0%} of decisions "
        f"waiting): {commands:.2f} commands and {usec:.1f} us of script per decision.",
    ]
    return lines


def main() -> None:
    began = time.monotonic()
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
        f"# Redis at scale: resilience vs limits (one private redis-server; medians of "
        f"interleaved rounds: {ROUNDS} of {ROUND_DECISIONS} decisions per process for "
        f"decisions/s, {COST_ROUNDS} of {DECISIONS} decisions for costs)",
        "",
        "| measure | resilience | limits (moving window) | ratio |",
        "|---|---:|---:|---:|",
    ]
    rate_only = "--rate" in sys.argv[1:]
    try:
        lines += rate_rows(client, url)
        if not rate_only:
            lines += _breaker_lines(client, url)
        lines += floor_rows(client)
    finally:
        client.close()
        process.kill()
        process.wait(5)
    lines += [NOTES, f"Took {time.monotonic() - began:.0f} s."]
    report = "\n".join(lines) + "\n"
    print(report)
    if not rate_only:
        OUT.write_text(report)


if __name__ == "__main__":
    main()
