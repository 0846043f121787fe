"""
The benchmark harness: scenarios, calibrated interleaved timing, and the markdown report.

A ``bench_<topic>.py`` module defines ``scenarios() -> list[Scenario]`` and, optionally,
``targets() -> list[Target]`` (performance claims that ``--check`` enforces). Each contender is
a zero-argument callable (``kind="sync"``) or coroutine function (``kind="async"``) that does
ONE call of the thing measured. The runner (``benchmarks/run.py``) times every contender of a
scenario round-robin, repeat after repeat, so machine noise hits all of them alike, and
reports the median.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.metadata
import itertools
import math
import os
import platform
import statistics
import sys
import time

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


__all__ = [
    "PEERS",
    "Measurement",
    "Scenario",
    "Target",
    "calibrate",
    "machine_info",
    "measure",
    "optional",
]

#: Every distribution whose version the report prints (ours first, then wrapt, then peers).
PEERS = (
    "resilience",
    "wrapt",
    "tenacity",
    "stamina",
    "backoff",
    "pybreaker",
    "circuitbreaker",
    "purgatory",
    "aiobreaker",
    "aiolimiter",
    "limits",
    "pyrate-limiter",
    "structlog",
)


@dataclass(frozen=True)
class Scenario:
    """
    One comparison: contenders doing the same single call, timed side by side.

    ``contenders`` maps a row label to a zero-argument callable (``kind="sync"``) or a
    zero-argument coroutine function (``kind="async"``) that does ONE call. A value of
    ``None`` means "not available" (a peer library that is not installed) and is reported as
    a skipped row. Ratios are reported against ``baseline`` and against ``"resilience"``.
    """

    title: str
    kind: Literal["sync", "async"]
    contenders: Mapping[str, Callable[[], Any] | None]
    baseline: str = "bare call"
    note: str = ""
    #: Called before the scenario runs; returns the teardown called after it (e.g. attach a
    #: telemetry handler only while this scenario runs, so it cannot slow the others).
    setup: Callable[[], Callable[[], Any]] | None = None
    #: At least this many repeats (a scenario whose one "call" is a long block of calls,
    #: where one measurement is one call, needs more of them for a steady median).
    repeats: int = 0
    #: ``"wall"`` (``perf_counter``) or ``"process"`` (``process_time``: the CPU of every
    #: thread of this process, blind to other processes on a shared machine; for a scenario
    #: whose cost is a background thread's CPU, which the GIL takes from the application).
    timer: Literal["wall", "process"] = "wall"
    #: A scenario that times itself: ``rounds(n)`` returns one ``Measurement`` per contender
    #: whose ``per_call`` holds *n* figures, figure *i* of every contender measured side by
    #: side in round *i* (for a cost too small or too bursty for whole calls timed one after
    #: another). Its ratios are paired: the median of the per-round ratios, so a slow
    #: second of a shared machine cancels within its round instead of blurring the medians.
    rounds: Callable[[int], list[Measurement]] | None = None


@dataclass(frozen=True)
class Target:
    """
    A performance claim: ``contender`` costs at most ``at_most`` times ``versus``.

    Both are row labels of the scenario titled ``scenario``. ``--check`` fails when the
    median ratio is above ``at_most`` or cannot be computed (a row errored or is missing).
    """

    scenario: str
    contender: str
    versus: str
    at_most: float
    claim: str = ""


@dataclass
class Measurement:
    """The repeats of one contender: seconds per call, or the error that stopped it."""

    label: str
    loops: int = 0
    per_call: list[float] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def median(self) -> float | None:
        """The median seconds per call, or None when nothing was measured."""
        return statistics.median(self.per_call) if self.per_call else None

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the repeats, a rough noise gauge."""
        med = self.median
        if not med or len(self.per_call) < 2:
            return None
        return (max(self.per_call) - min(self.per_call)) / med


def optional(module: str) -> Any | None:
    """Import *module*, or return None when it (a peer in the ``bench`` extra) is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# -- timing -------------------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None


def _event_loop() -> asyncio.AbstractEventLoop:
    """One event loop for the whole run: async measurements never pay ``asyncio.run``."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


def close_event_loop() -> None:
    """Close the run's event loop (after the last async scenario)."""
    global _loop
    if _loop is not None and not _loop.is_closed():
        _loop.close()
    _loop = None


async def _arun(func: Callable[[], Any], loops: int, clock: Callable[[], float]) -> float:
    repeat = itertools.repeat
    start = clock()
    for _ in repeat(None, loops):
        await func()
    return clock() - start


def measure(
    kind: str, func: Callable[[], Any], loops: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Return the seconds *loops* calls of *func* take (awaited ones inside one coroutine)."""
    if kind == "async":
        return _event_loop().run_until_complete(_arun(func, loops, clock))
    repeat = itertools.repeat
    start = clock()
    for _ in repeat(None, loops):
        func()
    return clock() - start


def calibrate(kind: str, func: Callable[[], Any], target: float) -> int:
    """Return a loop count that makes one measurement of *func* last about *target* seconds."""
    loops = 1
    while True:
        elapsed = measure(kind, func, loops)
        if elapsed >= target / 5:
            break
        # Grow fast while the run is too short to extrapolate from.
        loops *= 10 if elapsed < target / 100 else 2
    return max(1, math.ceil(loops * target / elapsed))


def loop_overhead() -> float:
    """Seconds per call of an empty function in the timing loop: the floor of every ns/call."""

    def nothing() -> None:
        return None

    loops = calibrate("sync", nothing, 0.05)
    return min(measure("sync", nothing, loops) / loops for _ in range(3))


# -- machine information ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """What a reader needs to judge the numbers: CPU, cores, load, Python, package versions."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} logical"
    if affinity is not None and affinity != os.cpu_count():
        cores += f" ({affinity} usable)"
    info = {
        "CPU": _cpu_model(),
        "cores": cores,
        "Python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "OS": f"{platform.system()} {platform.release()}",
    }
    if hasattr(os, "getloadavg"):
        info["load average at start"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info["packages"] = ", ".join(f"{dist} {_version(dist)}" for dist in PEERS)
    return info


def collect_garbage() -> None:
    """Start every measurement from the same heap (the GC stays on while timing)."""
    gc.collect()
