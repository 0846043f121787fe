"""
Telemetry for ``@retry``: per-attempt events and the progress line of long retry loops.

Both live off the success path. Attempt events are built only while someone listens: the
retry layer then runs a twin pipeline whose innermost step is ``attempt_events``, and the
attempt number travels in a context variable set per call. The progress tracker is fed by
the retry loop's slow path only: like the Tinker SDK's RetryHandler, at most every two
seconds it reports how many calls wait, run and completed, and the errors seen since the
last line, grouped and counted (event ``resilience.retry.progress`` and a structlog line).
"""

from __future__ import annotations

import threading

from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any

from resilience.telemetry._bus import emit
from resilience.telemetry._spans import now_ns
from resilience.telemetry._structlog import log_event


__all__ = [
    "PROGRESS_INTERVAL",
    "RetryProgress",
    "attempt_events",
    "attempt_events_async",
    "describe",
    "run_observed",
    "run_observed_async",
]

PROGRESS_INTERVAL = 2.0
_MAX_KINDS = 50  # distinct error texts kept per interval; the rest are counted as "other"

Runner = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_attempt: ContextVar[list[int] | None] = ContextVar("resilience_retry_attempt", default=None)


def describe(outcome: object) -> str:
    """One short line for an outcome: ``"Type: message"`` for errors, the repr for results."""
    if isinstance(outcome, BaseException):
        lines = str(outcome).splitlines()
        return f"{type(outcome).__name__}: {lines[0] if lines else 'No error message'}"
    text = repr(outcome)
    return f"result {text[:80]}..." if len(text) > 80 else f"result {text}"


def _next_attempt() -> int:
    counter = _attempt.get()
    if counter is None:
        return 1
    counter[0] += 1
    return counter[0]


def _stop(layer: Any, attempt: int, started: int, exc: BaseException | None, clock: object) -> None:
    elapsed = now_ns(clock) - started
    metadata: dict[str, Any] = {"name": layer.name, "attempt": attempt}
    if exc is None:
        metadata["outcome"] = "returned"
    else:
        metadata.update(outcome="raised", exception=exc, error_type=type(exc).__name__)
    emit(
        "resilience.retry.attempt.stop",
        {"attempt": attempt, "duration": elapsed / 1e9, "duration_ns": elapsed},
        metadata,
    )


def attempt_events(layer: Any, call_next: Runner) -> Runner:
    """Wrap *call_next* so each call emits ``resilience.retry.attempt.start``/``.stop``."""

    def attempt(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        number = _next_attempt()
        clock = layer.policy.clock
        emit(
            "resilience.retry.attempt.start",
            {"attempt": number},
            {"name": layer.name, "attempt": number},
        )
        started = now_ns(clock)
        try:
            result = call_next(wrapped, instance, args, kwargs)
        except BaseException as exc:
            _stop(layer, number, started, exc, clock)
            raise
        _stop(layer, number, started, None, clock)
        return result

    return attempt


def attempt_events_async(layer: Any, call_next: Runner) -> Runner:
    """The async twin of ``attempt_events``."""

    async def attempt(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        number = _next_attempt()
        clock = layer.policy.clock
        emit(
            "resilience.retry.attempt.start",
            {"attempt": number},
            {"name": layer.name, "attempt": number},
        )
        started = now_ns(clock)
        try:
            result = await call_next(wrapped, instance, args, kwargs)
        except BaseException as exc:
            _stop(layer, number, started, exc, clock)
            raise
        _stop(layer, number, started, None, clock)
        return result

    return attempt


def run_observed(
    observed: Runner,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run the observed twin pipeline with a fresh attempt counter for this call."""
    token = _attempt.set([0])
    try:
        return observed(wrapped, instance, args, kwargs)
    finally:
        _attempt.reset(token)


async def run_observed_async(
    observed: Callable[..., Awaitable[Any]],
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The async twin of ``run_observed``."""
    token = _attempt.set([0])
    try:
        return await observed(wrapped, instance, args, kwargs)
    finally:
        _attempt.reset(token)


class RetryProgress:
    """
    How the calls of one decorated function fare in their retry loops; slow path only.

    A call enters after its first failure and is *running* (an attempt or a decision) or
    *waiting* (a backoff sleep, bracketed by ``sleeping``/``awake`` even when cancelled)
    until it leaves (success or give-up: *completed*). Every failure is counted under its
    ``describe()`` text until the next report.
    """

    __slots__ = (
        "_acquire",
        "_errors",
        "_lock",
        "_release",
        "completed",
        "failures",
        "interval",
        "last_report",
        "owner",
        "running",
        "waiting",
    )

    def __init__(self, owner: Any, interval: float = PROGRESS_INTERVAL) -> None:
        self.owner = owner  # anything with a ``.name`` (the retry layer, named once bound)
        self.interval = interval
        self.running = 0
        self.waiting = 0
        self.completed = 0
        self.failures = 0
        self.last_report: float | None = None
        self._errors: dict[Hashable, list[Any]] = {}  # key -> [count, exemplar outcome]
        self._lock = threading.Lock()
        self._acquire = self._lock.acquire  # bound once: cheaper than `with` per failure
        self._release = self._lock.release

    def enter(self, now: float) -> None:
        """A call starts retrying; the first of a busy spell starts the report timer."""
        self._acquire()
        try:
            if self.running + self.waiting == 0:
                self.last_report = now
            self.running += 1
        finally:
            self._release()

    def failed(self, outcome: object, now: float) -> None:
        """Count a failed attempt's outcome, then report if a line is due."""
        # Group by type and arguments, keeping one exemplar: the text is built only when
        # a line is reported, not on every failure (this runs on every failed attempt).
        key: Hashable = (
            (type(outcome), outcome.args)
            if isinstance(outcome, BaseException)
            else describe(outcome)
        )
        self._acquire()
        try:
            errors = self._errors
            try:
                entry = errors.get(key)
            except TypeError:  # unhashable arguments
                key = describe(outcome)
                entry = errors.get(key)
            if entry is not None:
                entry[0] += 1
            elif len(errors) < _MAX_KINDS:
                errors[key] = [1, outcome]
            else:
                other = errors.setdefault("other", [0, None])
                other[0] += 1
            self.failures += 1
        finally:
            self._release()
        last = self.last_report
        if last is None or now - last >= self.interval:
            self.report_if_due(now)

    def sleeping(self) -> None:
        """The call waits out a backoff delay."""
        with self._lock:
            self.running -= 1
            self.waiting += 1

    def awake(self, now: float) -> None:
        """The call's wait is over; it runs its next attempt."""
        with self._lock:
            self.waiting -= 1
            self.running += 1
        self.report_if_due(now)

    def leave(self, now: float) -> None:
        """The call is done: it returned, raised or gave up."""
        self._acquire()
        try:
            self.running -= 1
            self.completed += 1
        finally:
            self._release()
        last = self.last_report
        if last is None or now - last >= self.interval:
            self.report_if_due(now)

    def report_if_due(self, now: float) -> bool:
        """Emit and log one progress line if *interval* seconds passed since the last one."""
        last = self.last_report  # unlocked first look: most calls are not due
        if last is not None and now - last < self.interval:
            return False
        with self._lock:
            last = self.last_report
            if last is not None and now - last < self.interval:
                return False
            self.last_report = now
            counts = {
                "waiting": self.waiting,
                "running": self.running,
                "completed": self.completed,
                "failures": self.failures,
            }
            grouped = self._errors
            self._errors = {}
        texts: dict[str, int] = {}
        for count, exemplar in grouped.values():
            text = "other" if exemplar is None else describe(exemplar)
            texts[text] = texts.get(text, 0) + count
        errors = sorted(texts.items(), key=lambda item: (-item[1], item[0]))
        metadata = {"name": self.name, "errors": errors}
        emit("resilience.retry.progress", counts, metadata)
        log_event("resilience.retry.progress", counts, metadata, level="debug")  # as Tinker
        return True

    @property
    def name(self) -> str:
        """The decorated function's name in events and lines."""
        return str(self.owner.name)

    def __repr__(self) -> str:
        return (
            f"<RetryProgress {self.name!r} waiting={self.waiting} running={self.running} "
            f"completed={self.completed}>"
        )
