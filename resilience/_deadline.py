"""
Deadlines that travel with the call: ``deadline(seconds)`` and ``remaining()``.

A deadline lives in a ``contextvars`` variable, so it follows the call into asyncio tasks
and into threads started with ``contextvars.copy_context()``. The variable holds the
innermost ``deadline`` entered, whose ``at`` is already the earliest end of it and every
deadline around it (an inner one never extends an outer one), so ``remaining()`` is one
variable read and one clock read. Times are read on the decorators' clock (the process
default, which ``resilience.testing.virtual_time()`` replaces), so virtual time moves
deadlines too.

Sync blocks are never interrupted: leaving a ``with deadline()`` after an overrun does not
raise. ``async with deadline()`` (and ``@deadline`` on a coroutine function) cancels its
block at the deadline, as ``asyncio.timeout`` does, and raises ``DeadlineExceededError``
instead of the ``CancelledError``. Every decorator reads ``remaining()`` where it waits.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys

from collections.abc import Callable
from contextvars import ContextVar, Token
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from resilience import _clock
from resilience._decorating import Layer, Runner, apply
from resilience._errors import DeadlineExceededError
from resilience._validate import MAX_DURATION, duration


if TYPE_CHECKING:
    from types import TracebackType

    from resilience.typing import Clock


__all__ = ["Deadline", "call_later", "current", "deadline", "format_timeout", "remaining"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_current: ContextVar[Deadline | None] = ContextVar("resilience_deadline", default=None)
_now = _clock.resolve  # resolve(None): the default clock in force right now
_INF = math.inf
_MAX = MAX_DURATION
_getframe = sys._getframe
# The hot path's bound methods and holders, read once here rather than at each entry.
_get = _current.get
_set = _current.set
_reset = _current.reset
_default = _clock.DEFAULT  # ``.monotonic``: the default clock's, swapped with it


def _seconds(value: object) -> float:
    """*value* checked as a deadline's length (the slow path: ints, timedeltas, inf, errors)."""
    return duration("deadline", "seconds", value, allow_inf=True)  # type: ignore[return-value]


class _PurePython:
    """
    The deadline's hot part (made, entered, left) in Python; ``_speedups.DeadlineCore`` in C.

    Both keep the same slots and rules; ``RESILIENCE_NO_EXTENSIONS=1`` forces this one.
    """

    __slots__ = ("_code", "_lasti", "_token", "at", "owner", "seconds")

    at: float  # the effective end on the clock, set on entering
    owner: Deadline  # the deadline whose end `at` is (this one or an outer one), set on entering

    def __init__(self, seconds: float | Any, /) -> None:
        if type(seconds) is not float or not 0.0 <= seconds <= _MAX:  # NaN fails too
            seconds = _seconds(seconds)
        self.seconds: float = seconds
        frame = _getframe(1)  # where it is set: the code and offset (the line only when asked)
        self._code: CodeType | None = frame.f_code
        self._lasti: int = frame.f_lasti

    def _fresh(self) -> Deadline:
        """A deadline of the same length and origin, for one call of a decorated callable."""
        scope = deadline.__new__(deadline)
        scope.seconds = self.seconds
        scope._code = self._code
        scope._lasti = self._lasti
        return scope

    def __enter__(self) -> Deadline:
        at = _default.monotonic() + self.seconds
        outer = _get()
        if outer is not None and outer.at <= at:  # an inner deadline never extends an outer
            self.at = outer.at
            self.owner = outer.owner
        else:
            self.at = at
            self.owner = self  # type: ignore[assignment]  # always a Deadline: a base's slot
        self._token: Token[Deadline | None] = _set(self)  # type: ignore[arg-type]
        return self  # type: ignore[return-value]

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        _reset(self._token)


def _line(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset *lasti* in *code*."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return None


def _accelerator() -> ModuleType | None:
    """The C accelerator, unless it was not built or ``RESILIENCE_NO_EXTENSIONS`` is set."""
    if os.environ.get("RESILIENCE_NO_EXTENSIONS"):
        return None
    try:
        from resilience import _speedups  # noqa: PLC0415 - optional, built where a compiler was
    except ImportError:  # pragma: no cover - built where a C compiler was found
        return None
    return _speedups


_speedups = _accelerator()

if TYPE_CHECKING:
    _Core = _PurePython
elif _speedups is not None:
    _Core = _speedups.DeadlineCore
else:
    _Core = _PurePython

#: Whether the C accelerator is in use (False without a compiler, or with the env switch).
ACCELERATED = _Core is not _PurePython


class deadline(_Core):  # noqa: N801 - the contract's name, a context manager like contextlib.suppress
    """
    A deadline for a block of code and everything it calls.

    Use it as a context manager (``with`` and ``async with``) or as a decorator of sync
    and async callables; nested deadlines keep the earliest end. A ``Deadline`` object is
    entered once at a time: make one per block (``with deadline(2.0):``), as a decorator
    does for each call.

    Args:
        seconds: How long from entering the block, in seconds (a float or a
            ``timedelta``), >= 0; ``math.inf`` sets no limit of its own.

    Attributes:
        seconds: The length given.
        where: Where the deadline was made (``file:line``), for messages.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_task")

    @property
    def where(self) -> str:
        """Where the deadline was made, as ``file:line`` (empty when unknown)."""
        code = self._code
        if code is None:
            return ""
        return f"{code.co_filename}:{_line(code, self._lasti)}"

    def error(self, name: str = "", **detail: str) -> DeadlineExceededError:
        """The error that says this deadline (or the outer one that set its end) passed."""
        owner: Deadline = getattr(self, "owner", self)  # set on entering
        return DeadlineExceededError(owner.seconds, where=owner.where, name=name, **detail)

    def describe(self) -> str:
        """The governing deadline in words, for notes: ``the deadline of 2 s set at f.py:3``."""
        owner: Deadline = getattr(self, "owner", self)  # set on entering
        where = owner.where
        at = f" set at {where}" if where else ""
        return f"the deadline of {owner.seconds:g} s{at}"

    # -- async -----------------------------------------------------------------------------

    async def __aenter__(self) -> Deadline:
        self.__enter__()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - async with runs inside a task
            msg = "async with deadline() needs a running asyncio task"
            raise RuntimeError(msg)
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = False
        self._handle: _Cancellable | None = None
        if self.at != _INF:
            clock = _now(None)
            self._handle = call_later(clock, self.at - clock.monotonic(), self._fire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
        _current.reset(self._token)
        if (
            self._fired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise self.error() from exc

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    # -- as a decorator --------------------------------------------------------------------

    @overload
    def __call__(self, target: classmethod[T, P, R]) -> classmethod[T, P, R]: ...
    @overload
    def __call__(self, target: staticmethod[P, R]) -> staticmethod[P, R]: ...
    @overload
    def __call__(self, target: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, target: Any) -> Any:
        """Decorate *target*: each call runs under a fresh deadline of ``seconds``."""
        return apply(_DeadlineLayer(self), target)

    def __repr__(self) -> str:
        where = self.where
        return f"deadline({self.seconds!r})" + (f" set at {where}" if where else "")


if ACCELERATED:
    _speedups.configure(_current, _default, _seconds, _MAX, deadline)  # type: ignore[union-attr]

Deadline = deadline
"""The class of ``deadline`` objects, under a class's usual spelling (for annotations)."""


def remaining() -> float | None:
    """
    Return the seconds left before the current deadline (never below 0.0), or None.

    None means no deadline is set in this context (or only ``deadline(math.inf)``).

    .. versionadded:: 0.2.0
    """
    scope = _current.get()
    if scope is None or scope.at == _INF:  # deadline(math.inf) sets no limit of its own
        return None
    left: float = scope.at - _now(None).monotonic()
    return left if left > 0.0 else 0.0


def current() -> Deadline | None:
    """The innermost deadline entered in this context (its ``at`` is the effective end)."""
    return _current.get()


class _DeadlineLayer(Layer):
    """``@deadline``'s layer: every call enters a fresh deadline of the template's length."""

    decorator = "deadline"
    __slots__ = ()
    policy: Deadline

    def build_sync(self, call_next: Runner) -> Runner:
        template = self.policy

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            with template._fresh():
                return call_next(wrapped, instance, args, kwargs)

        return run

    def build_async(self, call_next: Runner) -> Runner:
        template = self.policy

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            async with template._fresh():
                return await call_next(wrapped, instance, args, kwargs)

        return run


_GRPC_UNITS = (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600))


def format_timeout(seconds: float, style: str = "seconds") -> str:
    """
    Write a time left for a downstream header: ``"seconds"`` (``"1.250"``) or ``"grpc"``.

    The gRPC form (``grpc-timeout``) is at most 8 digits and a unit, the finest that fits
    (``250m``, ``3S``); values are rounded down, so the server never waits longer than we do.
    """
    seconds = max(0.0, seconds)
    if style == "grpc":
        for unit, scale in _GRPC_UNITS:
            value = math.floor(seconds * scale)
            if value < 100_000_000:
                return f"{value}{unit}"
        return "99999999H"
    return f"{math.floor(seconds * 1000) / 1000:.3f}"


# -- timers on any clock ---------------------------------------------------------------------


class _Cancellable:
    """What ``call_later`` returns: something with ``cancel()``."""

    def cancel(self) -> object:  # pragma: no cover - a protocol, never instantiated
        raise NotImplementedError


def call_later(clock: Clock, delay: float, callback: Callable[[], object]) -> Any:
    """
    Run *callback* in the running loop after *delay* seconds on *clock*; ``.cancel()`` stops it.

    The real clock uses the loop's own timers (the loop's ``time()`` is the same monotonic
    clock); a clock with a ``call_later`` of its own (``FakeClock``) schedules in virtual
    time; any other clock gets a small task that sleeps through it.
    """
    loop = asyncio.get_running_loop()
    if clock is _clock.SYSTEM_CLOCK:
        return loop.call_later(delay, callback)
    schedule = getattr(clock, "call_later", None)
    if schedule is not None:
        return schedule(delay, callback)
    return loop.create_task(_sleep_then(clock, delay, callback))


async def _sleep_then(clock: Clock, delay: float, callback: Callable[[], object]) -> None:
    await clock.asleep(max(0.0, delay))
    callback()
