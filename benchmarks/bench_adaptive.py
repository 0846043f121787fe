"""
The price of issue 16's layers on the path where nothing is refused.

- ``@bounded`` with an ``AdaptiveLimit`` against a fixed ``@bounded``: one permit with room,
  plus timing the call and feeding the sample to the algorithm (beside it: Gradient2 at a
  limit where every call is timed, and a fixed pool whose lease starts are recorded).
- ``@throttled`` while the upstream accepts everything (probability 0) against
  ``@circuit_breaker`` closed (the issue's comparison: the default breaker, which records
  nothing on a success), against a failure-rate breaker over a time window (which, like
  the throttle, counts every call), and against the floor of any throttle written in
  Python: a hand-written layer that on each success only reads the clock, checks the bucket
  and counts the accept. ``@throttled`` runs that path in C when the accelerator is built;
  its pure-Python runner (what ``RESILIENCE_NO_EXTENSIONS=1`` gives) is measured beside it.
- A weighted ``@rate_limited`` (a callable ``cost``) against an unweighted one, both with
  room.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import time

from collections.abc import Callable
from typing import Any

from benchmarks._harness import Measurement, Scenario, Target, calibrate, measure
from resilience import (
    AdaptiveLimit,
    bounded,
    circuit_breaker,
    rate_limited,
    snapshot,
    throttled,
)
from resilience._decorating import Layer, Runner, apply
from resilience._throttle.layer import ThrottleLayer
from resilience._throttle.state import ThrottlePolicy
from resilience.stores import MemoryStore


ADAPTIVE = "adaptive @bounded, a permit with room (sync)"
THROTTLE = "@throttled closed path against the breaker's (sync)"
WEIGHTED = "weighted @rate_limited with room (sync)"
HUGE = 10**6  # calls per second: the budget never runs out while measuring
#: The weighted scenario's rounds: a sub-block of each contender per round, ~4 ms each.
WEIGHTED_ROUNDS = 301
WEIGHTED_BLOCK = 0.004

_keys = itertools.count()


def work() -> int:
    return 1


def paired_rounds(contenders: dict[str, Callable[[], Any]]) -> Callable[[int], list[Measurement]]:
    """
    Time *contenders* in rounds: each round a short sub-block of each, in a shuffled order.

    A difference of a few percent is what the weighted scenario measures, and a shared
    machine's slow seconds blur whole-call medians by more than that; paired, a slow second
    hits every contender of its round alike and cancels in the round's ratio.
    """

    def rounds(count: int) -> list[Measurement]:
        loops = {
            label: calibrate("sync", func, WEIGHTED_BLOCK) for label, func in contenders.items()
        }
        rows = {label: Measurement(label, loops=loops[label]) for label in contenders}
        order = list(contenders)
        shuffle = random.Random(16).shuffle
        for turn in range(max(count, WEIGHTED_ROUNDS)):
            if turn % 50 == 0:
                gc.collect()
            shuffle(order)
            for label in order:
                n = loops[label]
                spent = measure("sync", contenders[label], n, time.process_time)
                rows[label].per_call.append(spent / n)
        return list(rows.values())

    return rounds


class ThrottleFloor(Layer):
    """What any throttle must do on a success: read the clock, check the bucket, count."""

    decorator = "throttle floor"
    __slots__ = ()

    def build_sync(self, call_next: Runner) -> Runner:
        monotonic = time.monotonic
        accepts = itertools.count()
        until = math.inf  # the current bucket's end: it never rolls here

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            result = wrapped(*args, **kwargs) if kwargs else wrapped(*args)  # as @throttled
            if monotonic() < until:
                next(accepts)
            return result

        return run


class PurePythonThrottle(ThrottleLayer):
    """``@throttled`` with its Python runner alone (as without the C accelerator)."""

    __slots__ = ()
    accelerated = False


def scenarios() -> list[Scenario]:
    """The three comparisons of issue 16."""
    fixed = bounded(limit=1000, key=f"bench-adaptive-{next(_keys)}")(work)
    gradient = bounded(limit=AdaptiveLimit(initial=1000), key=f"bench-adaptive-{next(_keys)}")(work)
    aimd = bounded(
        limit=AdaptiveLimit(algorithm="aimd", initial=1000), key=f"bench-adaptive-{next(_keys)}"
    )(work)
    narrow = bounded(  # a window of 20 calls: every call timed (two clock reads)
        limit=AdaptiveLimit(initial=20, min_limit=20, max_limit=20),
        key=f"bench-adaptive-{next(_keys)}",
    )(work)
    watched_store = MemoryStore()  # pools a snapshot has read: lease starts recorded
    watched = bounded(limit=1000, key=f"bench-adaptive-{next(_keys)}", store=watched_store)(work)
    snapshot(watched_store)
    throttle = throttled(key=f"bench-adaptive-{next(_keys)}")(work)
    floor = apply(ThrottleFloor(None), work)
    pure = apply(PurePythonThrottle(ThrottlePolicy(key=f"bench-adaptive-{next(_keys)}")), work)
    breaker = circuit_breaker(name=f"bench-adaptive-{next(_keys)}")(work)
    windowed = circuit_breaker(
        name=f"bench-adaptive-{next(_keys)}", failure_rate=0.5, window_duration=120.0
    )(work)
    plain = rate_limited(rate=HUGE, per=1.0, key=f"bench-adaptive-{next(_keys)}")(work)
    weighted = rate_limited(
        rate=HUGE, per=1.0, key=f"bench-adaptive-{next(_keys)}", cost=lambda: 1
    )(work)
    weighed: dict[str, Callable[[], Any]] = {
        "bare call": work,
        "resilience": weighted,
        "unweighted": plain,
    }
    return [
        Scenario(
            title=ADAPTIVE,
            kind="sync",
            contenders={
                "bare call": work,
                "resilience": gradient,
                "fixed @bounded": fixed,
                "AdaptiveLimit(aimd)": aimd,
                "gradient2 at a limit of 20 (every call timed)": narrow,
                "fixed @bounded, watched (lease starts recorded)": watched,
            },
            note=(
                "one of 1000 permits, call, release and feed the sample; nobody waits; "
                "gradient2's window of 1000 calls times every 31st (at least 32 timed calls "
                "per window), at a limit of 20 it times every call; a pool that a snapshot "
                "has read records each lease's start (its oldest_lease)"
            ),
        ),
        Scenario(
            title=THROTTLE,
            kind="sync",
            contenders={
                "bare call": work,
                "resilience": throttle,
                "@circuit_breaker": breaker,
                "@circuit_breaker(failure_rate, window_duration)": windowed,
                "floor: clock, bucket, count": floor,
                "@throttled, pure Python": pure,
            },
            note=(
                "every call succeeds: probability 0, nothing refused; the default breaker "
                "(the issue's comparison) records nothing on success, the failure-rate one "
                "counts every call in a time window as the throttle does; the floor is a "
                "hand-written Python layer doing only what a throttle must on a success (read "
                "the clock, check the bucket, count the accept); resilience runs that path in "
                "C when the accelerator is built, and its pure-Python runner is the last row"
            ),
        ),
        Scenario(
            title=WEIGHTED,
            kind="sync",
            contenders=weighed,
            timer="process",
            rounds=paired_rounds(weighed),
            note=(
                "cost=lambda: 1 against the default cost; a budget that never runs out; "
                "timed in process CPU (a difference of a few percent, which other "
                "processes' time slices on a shared machine would swamp in wall time), in "
                f"{WEIGHTED_ROUNDS} rounds of a ~{WEIGHTED_BLOCK * 1000:g} ms sub-block of each "
                "contender in a shuffled order; ratios are paired (the median of each round's "
                "ratio); both "
                "start in C when the accelerator is built (the weighted one calls the cost "
                "callable and checks its answer there): the floor of the difference is that "
                "call of the cost callable"
            ),
        ),
    ]


def targets() -> list[Target]:
    """Issue 16's overhead claims."""
    return [
        Target(ADAPTIVE, "resilience", "fixed @bounded", 1.5, "adaptive <= 1.5x fixed"),
        Target(
            THROTTLE,
            "resilience",
            "@circuit_breaker",
            1.0,
            "no slower than the default breaker (records nothing on success)",
        ),
        Target(
            THROTTLE,
            "resilience",
            "@circuit_breaker(failure_rate, window_duration)",
            1.0,
            "no slower than a breaker counting the same window",
        ),
        Target(WEIGHTED, "resilience", "unweighted", 1.1, "weighted <= 1.1x unweighted"),
    ]
