"""
Helpers for users' own code: ``measure`` (a span), ``counter`` and ``gauge``.

They emit on the same bus as the decorators, so one handler (or the structlog bridge, or a
reporter) sees both. ``measure`` opens a span like ``@traced`` does, so calls traced inside
it name it as their parent.
"""

from __future__ import annotations

import functools
import inspect
import math

from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from resilience.telemetry._bus import emit
from resilience.telemetry._spans import Record, Span, enter_span, exit_span, new_span, now_ns


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["counter", "gauge", "measure"]

P = ParamSpec("P")
R = TypeVar("R")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        msg = f"name must be a non-empty dotted string such as 'myapp.fetch', got {name!r}"
        raise (TypeError if not isinstance(name, str) else ValueError)(msg)
    return name


def _check_value(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{field} must be a number, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if not math.isfinite(value):
        msg = f"{field} must be a finite number, got {value!r}"
        raise ValueError(msg)
    return value


def _check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        msg = f"metadata must be a mapping or None, got {type(metadata).__name__}"
        raise TypeError(msg)
    return dict(metadata)


class measure:  # noqa: N801 - used like a function: `with measure(...)`, `@measure(...)`
    """
    Time a block or a function: emit ``<name>.start``, then ``<name>.stop`` or ``<name>.exception``.

    Use as ``with measure("myapp.load", {"table": t}):``, ``async with measure(...)``, or
    as a decorator ``@measure("myapp.load")`` on sync and async functions. The stop and
    exception events carry ``measurements["duration"]`` (seconds) and ``["duration_ns"]``;
    the exception event adds ``metadata["exception"]`` and ``["error_type"]``; every event
    carries the span's ``trace_id``, ``span_id`` and ``parent_id``. One instance times one
    block at a time; the decorator makes a fresh one per call.

    Args:
        name: A dotted event-name prefix such as ``"myapp.load"``.
        metadata: Context added to every event.
        clock: Where durations are read (default: the process clock, virtual in tests).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_frames", "clock", "metadata", "name")

    def __init__(
        self, name: str, metadata: Mapping[str, Any] | None = None, *, clock: Clock | None = None
    ) -> None:
        self.name = _check_name(name)
        self.metadata = _check_metadata(metadata)
        self.clock = clock
        self._frames: list[tuple[Span, Token[Span | Record | None], int]] = []

    def __enter__(self) -> Span:
        span = new_span(self.name)
        token = enter_span(span)
        self._frames.append((span, token, now_ns(self.clock)))
        emit(f"{self.name}.start", None, {**self.metadata, **span.ids()})
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, token, started = self._frames.pop()
        try:
            elapsed = now_ns(self.clock) - started
            measurements = {"duration": elapsed / 1e9, "duration_ns": elapsed}
            metadata = {**self.metadata, **span.ids()}
            if exc is None:
                emit(f"{self.name}.stop", measurements, metadata)
            else:
                metadata["exception"] = exc
                metadata["error_type"] = type(exc).__name__
                emit(f"{self.name}.exception", measurements, metadata)
        finally:
            exit_span(token)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function: each call is measured."""
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            msg = f"measure() does not decorate generator functions; use @traced ({func!r})"
            raise TypeError(msg)
        name, metadata, clock = self.name, self.metadata, self.clock
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                async with measure(name, metadata, clock=clock):
                    return await func(*args, **kwargs)

            return timed_async  # type: ignore[return-value]

        @functools.wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            with measure(name, metadata, clock=clock):
                return func(*args, **kwargs)

        return timed

    def __repr__(self) -> str:
        return f"measure({self.name!r}, {self.metadata!r})"


def counter(name: str, value: float = 1, metadata: Mapping[str, Any] | None = None) -> None:
    """
    Emit a counter increment: an event *name* with ``measurements["count"] = value``.

    Raises:
        TypeError: If *name* is not a string or *value* not a number.
        ValueError: If *name* is empty or *value* not finite.

    .. versionadded:: 0.1.0
    """
    _check_name(name)
    _check_value("value", value)
    emit(name, {"count": value}, metadata)


def gauge(name: str, value: float, metadata: Mapping[str, Any] | None = None) -> None:
    """
    Emit a gauge reading: an event *name* with ``measurements["value"] = value``.

    Raises:
        TypeError: If *name* is not a string or *value* not a number.
        ValueError: If *name* is empty or *value* not finite.

    .. versionadded:: 0.1.0
    """
    _check_name(name)
    _check_value("value", value)
    emit(name, {"value": value}, metadata)
