"""
``@traced``: span-like start/stop/exception events with durations, for any callable.

Each call opens a span (a trace id, its own id, its parent's) in a context variable, so
nested traced calls, across awaits and threads started with ``contextvars.copy_context``,
name their parent. The events go to the bus and, unless the policy says otherwise, to
structlog's ``resilience`` logger; handlers run before the call returns or raises. For
generators the span covers the whole iteration, and is current only while the generator's
own code runs, never in the consumer's code between items.
"""

from __future__ import annotations

import functools
import time

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from resilience._clock import DEFAULT, SYSTEM_CLOCK
from resilience._decorating import (
    Decorator,
    Kind,
    Layer,
    Passage,
    Runner,
    apply,
    apump,
    is_target,
    policy_from,
    pump,
    terminal,
)
from resilience._dictable import FromDict
from resilience._validate import check_bool, check_choice
from resilience.telemetry._bus import BUS, TAPS, drop_tap, emit, run_taps
from resilience.telemetry._spans import (
    _current,
    _ids,
    enter_span,
    exit_span,
    new_span,
    now_ns,
    reset_span,
)
from resilience.telemetry._structlog import LEVELS, level_check, log_event, logs_at
from resilience.typing import Clock


__all__ = ["TracedFields", "TracedPolicy", "traced"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TracedPolicy(FromDict):
    """
    How ``@traced`` reports each call.

    Args:
        name: The span's name in events and lines (default: the callable's qualified name).
        level: The log level of the stop line (``"debug"``... ``"critical"``); the start
            line is logged at ``"debug"``, the exception line at ``"error"`` at least.
        log: Whether to write structlog lines (the bus always gets the events).
        attributes: Constant context added to every event's metadata.
        clock: Where durations are read (default: the process clock, virtual in tests).

    .. versionadded:: 0.1.0
    """

    name: str | None = None
    level: str = "info"
    log: bool = True
    attributes: Mapping[str, Any] = field(default_factory=dict)
    clock: Clock | None = None

    def __post_init__(self) -> None:
        owner = "TracedPolicy"
        name: object = self.name
        if name is not None and not isinstance(name, str):
            msg = f"{owner}.name must be a string or None, got {type(name).__name__} {name!r}"
            raise TypeError(msg)
        if name == "":
            msg = f"{owner}.name must be a non-empty string or None, got ''"
            raise ValueError(msg)
        check_choice(owner, "level", self.level, LEVELS)
        check_bool(owner, "log", self.log)
        if not isinstance(self.attributes, Mapping):
            msg = f"{owner}.attributes must be a mapping, got {type(self.attributes).__name__}"
            raise TypeError(msg)
        if not all(isinstance(k, str) for k in self.attributes):
            msg = f"{owner}.attributes must have string keys, got {list(self.attributes)!r}"
            raise TypeError(msg)
        object.__setattr__(self, "attributes", dict(self.attributes))
        if self.clock is not None and not isinstance(self.clock, Clock):
            msg = f"{owner}.clock must provide monotonic() (see resilience.typing.Clock), got {type(self.clock).__name__}"
            raise TypeError(msg)


class TracedFields(TypedDict, total=False):
    """The keyword arguments ``@traced(...)`` accepts: ``TracedPolicy``'s fields."""

    name: str | None
    level: str
    log: bool
    attributes: Mapping[str, Any]
    clock: Clock | None


class _Call(Passage):
    """
    One traced call: its span, when it started, and how to report.

    The span always becomes current (nested calls and ``current_span()`` need it); events
    and log lines are built only when someone would see them (a bus handler, or a level that
    structlog lets through), so an unobserved trace costs little.
    """

    __slots__ = ("layer", "listening", "logs_stop", "metadata", "span", "started", "token")

    def __init__(self, layer: TracedLayer) -> None:
        self.layer = layer
        span = self.span = new_span(layer.name)
        self.token = enter_span(span)
        policy = layer.policy
        self.listening = listening = BUS.traced
        logs_start = self.logs_stop = False
        if policy.log:
            check = level_check()  # one look at structlog's configuration for both lines
            self.logs_stop = check(policy.level)
            logs_start = self.logs_stop and check("debug")
        self.metadata: dict[str, Any] | None = None
        if listening or self.logs_stop:
            metadata = self._metadata()
            if listening:
                emit("resilience.trace.start", None, metadata, logged=logs_start)
            if logs_start:
                log_event("resilience.trace.start", None, metadata, "debug")
        self.started = now_ns(policy.clock)

    def _metadata(self) -> dict[str, Any]:
        metadata = self.metadata
        if metadata is None:
            layer = self.layer
            metadata = self.metadata = {
                **layer.policy.attributes,
                "name": layer.name,
                **self.span.ids(),
            }
        return metadata

    def stop(self, exc: BaseException | None) -> None:
        """Emit stop or exception with the duration; the span stays current meanwhile."""
        policy = self.layer.policy
        if TAPS:
            ended = now_ns(policy.clock)
            own = -1 if policy.clock is not None else ended
            run_taps(self.layer.name, ended - self.started, exc is not None, own)
        if exc is None:
            if not (self.listening or self.logs_stop):
                return
            measurements = self._measurements()
            if self.listening:
                emit("resilience.trace.stop", measurements, self._metadata(), logged=self.logs_stop)
            if self.logs_stop:
                log_event("resilience.trace.stop", measurements, self._metadata(), policy.level)
            return
        level = LEVELS[max(LEVELS.index(policy.level), LEVELS.index("error"))]
        logs = policy.log and logs_at(level)  # failures are logged even when stops are not
        if not (self.listening or logs):
            return
        measurements = self._measurements()
        metadata = {
            **self._metadata(),
            "exception": exc,
            "error_type": type(exc).__name__,
            "error": str(exc),
        }
        if self.listening:
            emit("resilience.trace.exception", measurements, metadata, logged=logs)
        if logs:
            log_event("resilience.trace.exception", measurements, metadata, level)

    def _measurements(self) -> dict[str, float]:
        elapsed = now_ns(self.layer.policy.clock) - self.started
        return {"duration": elapsed / 1e9, "duration_ns": elapsed}

    def leave(self) -> None:
        exit_span(self.token)

    def ended(self, exc: BaseException | None) -> None:
        """A traced generator is done: report, then leave the span."""
        try:
            self.stop(exc)
        finally:
            exit_span(self.token)

    def pause(self) -> None:
        """The generator yields: the consumer's code runs outside this span."""
        exit_span(self.token)

    def resume(self) -> None:
        self.token = enter_span(self.span)


perf_ns = time.perf_counter_ns  # ``now_ns`` on the system clock, without its frame
# ``open_span``, inlined by the quiet runners: the span is current as a ``Record`` (built
# into a ``Span`` only when read), which costs a fraction of building a ``Span`` per call.
_get_span = _current.get
_set_span = _current.set


class TracedLayer(Layer):
    """``@traced``'s layer: one span per call, for every kind of callable."""

    decorator = "traced"
    __slots__ = ()
    policy: TracedPolicy

    def bind(self, kind: Kind, qualname: str) -> None:
        self.name = self.policy.name or qualname

    def build_sync(self, call_next: Runner) -> Runner:
        layer = self
        # Unobserved (no log lines, nobody wants trace events): only the span, opened and
        # closed inline, and the call taps (``RollingMetrics``) given its duration. A
        # handler attached mid-call sees nothing of it either way (``_Call`` decides at the
        # start too).
        quiet = not self.policy.log
        bus = BUS
        taps = TAPS
        clock = self.policy.clock
        name = self.name
        direct = call_next is terminal
        ids, get_span, set_span = _ids, _get_span, _set_span

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if quiet and not bus.traced:
                salts = ids[0]
                token = set_span((name, next(salts[2]), salts, get_span()))
                if not taps:
                    try:
                        if direct:
                            return wrapped(*args, **kwargs)
                        return call_next(wrapped, instance, args, kwargs)
                    finally:
                        reset_span(token)
                timer = clock or DEFAULT.clock
                started = perf_ns() if timer is SYSTEM_CLOCK else now_ns(timer)
                failed = True
                try:
                    if direct:
                        result = wrapped(*args, **kwargs)
                    else:
                        result = call_next(wrapped, instance, args, kwargs)
                    failed = False
                    return result
                finally:
                    reset_span(token)
                    ended = perf_ns() if timer is SYSTEM_CLOCK else now_ns(timer)
                    own = -1 if clock is not None else ended  # on the default's clock
                    done = (name, ended - started, failed, own)
                    for tap in taps:
                        try:
                            tap(done)
                        except Exception as exc:  # a broken tap is dropped
                            drop_tap(tap, exc)
            call = _Call(layer)
            try:
                result = call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                call.stop(exc)
                raise
            else:
                call.stop(None)
                return result
            finally:
                call.leave()

        return runner

    def build_async(self, call_next: Runner) -> Runner:
        layer = self
        quiet = not self.policy.log  # see build_sync
        bus = BUS
        taps = TAPS
        clock = self.policy.clock
        name = self.name
        direct = call_next is terminal
        ids, get_span, set_span = _ids, _get_span, _set_span

        async def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if quiet and not bus.traced:
                salts = ids[0]
                token = set_span((name, next(salts[2]), salts, get_span()))
                if not taps:
                    try:
                        if direct:
                            return await wrapped(*args, **kwargs)
                        return await call_next(wrapped, instance, args, kwargs)
                    finally:
                        reset_span(token)
                timer = clock or DEFAULT.clock
                started = perf_ns() if timer is SYSTEM_CLOCK else now_ns(timer)
                failed = True
                try:
                    if direct:
                        result = await wrapped(*args, **kwargs)
                    else:
                        result = await call_next(wrapped, instance, args, kwargs)
                    failed = False
                    return result
                finally:
                    reset_span(token)
                    ended = perf_ns() if timer is SYSTEM_CLOCK else now_ns(timer)
                    own = -1 if clock is not None else ended  # on the default's clock
                    done = (name, ended - started, failed, own)
                    for tap in taps:
                        try:
                            tap(done)
                        except Exception as exc:  # a broken tap is dropped
                            drop_tap(tap, exc)
            call = _Call(layer)
            try:
                result = await call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                call.stop(exc)
                raise
            else:
                call.stop(None)
                return result
            finally:
                call.leave()

        return runner

    def build_gen(self, call_next: Runner) -> Runner:
        start = functools.partial(_Call, self)

        return functools.partial(pump, start, call_next)  # (wrapped, instance, args, kwargs)

    def build_asyncgen(self, call_next: Runner) -> Runner:
        layer = self

        async def start() -> _Call:
            return _Call(layer)

        return functools.partial(apump, start, call_next)  # (wrapped, instance, args, kwargs)


@overload
def traced(func: classmethod[T, P, R], /) -> classmethod[T, P, R]: ...
@overload
def traced(func: staticmethod[P, R], /) -> staticmethod[P, R]: ...
@overload
def traced(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def traced(
    name_or_policy: str | TracedPolicy | None = None, /, **fields: Unpack[TracedFields]
) -> Decorator[TracedPolicy]: ...
def traced(name: Any = None, /, **fields: Any) -> Any:
    """
    Report each call as a span: ``resilience.trace.start``, then ``.stop`` or ``.exception``.

    Use bare (``@traced``), with a name (``@traced("db.query")``), a policy
    (``@traced(TracedPolicy(level="debug"))``) or the policy's fields
    (``@traced(log=False, attributes={"db": "main"})``). The stop and exception events
    carry ``measurements["duration"]`` (seconds) and ``["duration_ns"]``; every event's
    metadata has ``name``, ``trace_id``, ``span_id`` and ``parent_id`` (None at the root),
    and the exception event adds ``exception``, ``error_type`` and ``error``. Works on sync
    and async functions, generator functions, methods, classmethods and staticmethods.

    Args:
        name: The span's name, or a ``TracedPolicy``.

    Raises:
        TypeError: For arguments of the wrong type.
        ValueError: For an unknown log level.

    .. versionadded:: 0.1.0
    """
    if is_target(name) and not isinstance(name, str) and not fields:  # bare @traced
        return apply(TracedLayer(TracedPolicy()), name)
    if isinstance(name, str):
        if "name" in fields:
            msg = "traced() got the name twice: positionally and as name="
            raise TypeError(msg)
        return Decorator(TracedPolicy(name=name, **fields), TracedLayer)
    return Decorator(policy_from(TracedPolicy, "traced", name, fields), TracedLayer)
