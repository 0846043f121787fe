"""
Telemetry for ``@retry``: per-attempt events and the progress line of long retry loops.

Both live off the success path. Attempt events are built only while someone listens: the
retry layer then runs a twin pipeline whose innermost step is ``attempt_events``, and the
attempt number travels in a context variable set per call. The progress tracker is fed by
the retry loop's slow path only: like the Tinker SDK's RetryHandler, at most every two
seconds it reports how many calls wait, run and completed, and the errors seen since the
last line, grouped and counted (event ``resilience.retry.progress`` and a structlog line).
It takes no lock per failure: events are appended, and counted in batches.
"""

from __future__ import annotations

import math
import threading

from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from resilience.telemetry._bus import emit
from resilience.telemetry._spans import now_ns
from resilience.telemetry._structlog import log_event


if TYPE_CHECKING:
    from resilience.typing import Clock


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
_NO_FAILURE: Any = object()
_BOUND = 64  # RetryProgress drains once this many failed outcomes are queued
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


def _stop(
    layer: Any, attempt: int, started: int, exc: BaseException | None, clock: Clock | None
) -> None:
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


def _begin(layer: Any) -> tuple[int, Clock | None, int]:
    """Number an attempt and emit its start: the number, the clock and when it started."""
    number = _next_attempt()
    clock = layer.policy.clock
    emit(
        "resilience.retry.attempt.start",
        {"attempt": number},
        {"name": layer.name, "attempt": number},
    )
    return number, clock, now_ns(clock)


def attempt_events(layer: Any, call_next: Runner) -> Runner:
    """Wrap *call_next* so each call emits ``resilience.retry.attempt.start``/``.stop``."""

    def attempt(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        number, clock, started = _begin(layer)
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
        number, clock, started = _begin(layer)
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
    ``describe()`` text until the next report. The first entry of a busy spell (no call in
    its loop) restarts the report timer, so a spell shorter than *interval* makes no line.

    Lock-free until a line is due: each step is one atomic C call on a list or deque.
    ``inflight`` and ``sleepers`` hold a ``None`` per call in its loop and per call waiting
    (their lengths are the counts, read as a snapshot); failed outcomes and completions
    queue in ``outcomes`` and ``done``. Whoever finds a line due (``now >= due_at``) or
    ``BOUND`` outcomes queued takes the lock and drains both queues (``del q[:n]``: only
    the lock holder removes), so grouping runs once per batch, the counts and groups equal
    those of locked per-failure accounting, and at most ``BOUND`` outcomes (with their
    tracebacks) wait. The retry drivers (``resilience._retry``) call ``enter``, ``failed``,
    ``sleeping``/``awake`` and ``leave``; only this class touches its attributes.
    """

    BOUND = _BOUND

    __slots__ = (
        "_completed",
        "_errors",
        "_failures",
        "_lock",
        "done",
        "due_at",
        "inflight",
        "interval",
        "last_report",
        "outcomes",
        "owner",
        "sleepers",
    )

    def __init__(self, owner: Any, interval: float = PROGRESS_INTERVAL) -> None:
        self.owner = owner  # anything with a ``.name`` (the retry layer, named once bound)
        self.interval = interval
        self.inflight: deque[None] = deque()
        self.sleepers: deque[None] = deque()
        self.outcomes: list[Any] = []
        self.done: list[None] = []
        self._completed = 0
        self._failures = 0
        self.last_report: float | None = None
        self.due_at = -math.inf  # last_report + interval
        self._errors: dict[Hashable, list[Any]] = {}  # key -> [count, exemplar outcome]
        self._lock = threading.Lock()

    def enter(self, now: float, failure: object = _NO_FAILURE) -> None:
        """
        A call starts retrying; the first of a busy spell starts the report timer.

        *failure*, when given, is the failed outcome that made it retry: ``failed`` too.
        """
        if not self.inflight:
            self.last_report = now
            self.due_at = now + self.interval
        self.inflight.append(None)
        if failure is not _NO_FAILURE:  # `failed`, inline: this is the retry's first step
            queued = self.outcomes
            queued.append(failure)
            if now >= self.due_at or len(queued) >= _BOUND:
                self.report_if_due(now)

    def failed(self, outcome: object, now: float) -> None:
        """Count a failed attempt's outcome, then report if a line is due."""
        queued = self.outcomes
        queued.append(outcome)
        if now >= self.due_at or len(queued) >= _BOUND:
            self.report_if_due(now)

    def sleeping(self) -> None:
        """The call waits out a backoff delay."""
        self.sleepers.append(None)

    def awake(self, now: float) -> None:
        """The call's wait is over; it runs its next attempt."""
        self.sleepers.pop()
        self.report_if_due(now)

    def leave(self, now: float) -> None:
        """The call is done: it returned, raised or gave up."""
        self.inflight.pop()
        self.done.append(None)
        if now >= self.due_at:
            self.report_if_due(now)

    def report_if_due(self, now: float) -> bool:
        """Emit and log one progress line if *interval* seconds passed since the last one."""
        with self._lock:
            self._drain()
            last = self.last_report
            if last is not None and now - last < self.interval:
                return False
            self.last_report = now
            self.due_at = now + self.interval
            waiting, running, completed, failures = self._snapshot()
            grouped = self._errors
            self._errors = {}
        counts = {
            "waiting": waiting,
            "running": running,
            "completed": completed,
            "failures": failures,
        }
        texts: dict[str, int] = {}
        for count, exemplar in grouped.values():
            text = "other" if exemplar is None else describe(exemplar)
            texts[text] = texts.get(text, 0) + count
        errors = sorted(texts.items(), key=lambda item: (-item[1], item[0]))
        metadata = {"name": self.name, "errors": errors}
        emit("resilience.retry.progress", counts, metadata)
        log_event("resilience.retry.progress", counts, metadata, level="debug")  # as Tinker
        return True

    def _drain(self) -> None:
        """Count the queued completions and outcomes (lock held; appends may go on)."""
        # Only the lock holder removes, and only from the front: `del q[:n]` drops exactly
        # the items read, whatever was appended meanwhile.
        done = self.done
        finished = len(done)
        del done[:finished]
        self._completed += finished
        queued = self.outcomes
        count = len(queued)
        batch = queued[:count]
        del queued[:count]
        self._failures += count
        errors = self._errors
        last_type: type | None = None  # a run of alike failures skips the dict
        last_args: Any = None
        entry: list[Any] = []
        for outcome in batch:
            kind = type(outcome)
            if kind is last_type:  # only ever an exception type
                args = outcome.args
                if args is not last_args:
                    last_args = args
                    entry = _entry(errors, (kind, args), outcome)
            elif isinstance(outcome, BaseException):
                last_type, last_args = kind, outcome.args
                entry = _entry(errors, (kind, last_args), outcome)
            else:  # a result that on_result retried: grouped by its text
                last_type = None
                entry = _entry(errors, describe(outcome), outcome)
            entry[0] += 1

    def _snapshot(self) -> tuple[int, int, int, int]:
        waiting = len(self.sleepers)  # first: a call only sleeps while in flight
        running = max(len(self.inflight) - waiting, 0)
        return waiting, running, self._completed, self._failures

    def _counts(self) -> tuple[int, int, int, int]:
        with self._lock:
            self._drain()
            return self._snapshot()

    @property
    def waiting(self) -> int:
        """Calls waiting out a backoff delay now."""
        return self._counts()[0]

    @property
    def running(self) -> int:
        """Calls in their retry loop and not waiting: in an attempt or a decision."""
        return self._counts()[1]

    @property
    def completed(self) -> int:
        """Calls that left their retry loop (returned, raised or gave up), ever."""
        return self._counts()[2]

    @property
    def failures(self) -> int:
        """Failed attempts counted, ever."""
        return self._counts()[3]

    @property
    def name(self) -> str:
        """The decorated function's name in events and lines."""
        return str(self.owner.name)

    def __repr__(self) -> str:
        waiting, running, completed, _ = self._counts()
        return (
            f"<RetryProgress {self.name!r} waiting={waiting} running={running} "
            f"completed={completed}>"
        )


def _entry(errors: dict[Hashable, list[Any]], key: Hashable, outcome: Any) -> list[Any]:
    """Return the entry ``[count, exemplar]`` of *outcome*'s group, adding it if new."""
    try:
        entry = errors.get(key)
    except TypeError:  # unhashable arguments
        key = describe(outcome)
        entry = errors.get(key)
    if entry is None:
        if len(errors) < _MAX_KINDS:
            entry = errors[key] = [0, outcome]
        else:
            entry = errors.setdefault("other", [0, None])
    return entry
