"""Benchmark scenarios: the cost of @traced per call and of emitting with no handler."""

from __future__ import annotations

import wrapt

from benchmarks._harness import Scenario, Target
from resilience import traced
from resilience.telemetry import attach, emit


def _target(x: int = 1) -> int:
    return x


@wrapt.decorator
def _passthrough(wrapped, instance, args, kwargs):
    return wrapped(*args, **kwargs)


_wrapt = _passthrough(_target)
_traced_quiet = traced("bench", log=False)(_target)


def _bare() -> int:
    return _target()


def _wrapt_call() -> int:
    return _wrapt()


def _traced_call() -> int:
    return _traced_quiet()


def _emit_call() -> None:
    emit("resilience.bench", {"n": 1.0}, {"name": "bench"})


def _one_handler() -> object:
    """Attach one handler (that keeps a count) for the scenario; return its teardown."""
    seen = [0]

    def handler(event: object) -> None:
        seen[0] += 1

    return attach(handler, ["resilience.bench", "resilience.trace"]).detach


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            title="tracing, no handler attached",
            kind="sync",
            contenders={
                "bare call": _bare,
                "wrapt pass-through": _wrapt_call,
                "resilience @traced(log=False)": _traced_call,
            },
            baseline="bare call",
            note="one call of a trivial function; @traced opens a span and emits start/stop to nobody",
        ),
        Scenario(
            title="telemetry emit",
            kind="sync",
            contenders={"bare call": _bare, "emit, 0 handlers": _emit_call},
            baseline="bare call",
            note="one emit() with nobody listening: a function call, one attribute read and a truth test",
        ),
        Scenario(
            title="telemetry emit, one handler attached",
            kind="sync",
            contenders={
                "bare call": _bare,
                "emit, 1 handler": _emit_call,
                "resilience @traced(log=False), 1 handler": _traced_call,
            },
            baseline="bare call",
            note=(
                "one emit() delivered to one handler (which counts it): the Event is built and "
                "the handler called; and @traced with its start/stop delivered. The handler is "
                "attached only while this scenario runs"
            ),
            setup=_one_handler,
        ),
    ]


def targets() -> list[Target]:
    """Unobserved tracing costs at most half a wrapt pass-through more than one."""
    return [
        Target(
            "tracing, no handler attached",
            "resilience @traced(log=False)",
            "wrapt pass-through",
            1.5,
            "@traced(log=False) <= 1.5x wrapt",
        )
    ]
