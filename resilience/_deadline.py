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
import sys

from collections.abc import Callable
from contextvars import ContextVar, Token
from types import CodeType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from resilience import _clock
from resilience._decorating import Layer, Runner, apply
from resilience._errors import DeadlineExceededError
from resilience._validate import duration


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
_getframe = sys._getframe


class deadline:  # noqa: N801 - the contract's name, a context manager like contextlib.suppress
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

    __slots__ = (
        "_cancelling",
        "_code",
        "_fired",
        "_handle",
        "_line",
        "_task",
        "_token",
        "at",
        "owner",
        "seconds",
    )

    at: float  # the effective end on the clock, set on entering

    def __init__(self, seconds: float | Any, /) -> None:
        if type(seconds) is not float or not seconds >= 0.0:  # the common case: one test
            seconds = duration("deadline", "seconds", seconds, allow_inf=True)
        self.seconds: float = seconds  # type: ignore[assignment]  # never None: no allow_none
        frame = _getframe(1)  # where it is set, for messages (the code and line, not the frame)
        self._code: CodeType | None = frame.f_code
        self._line = frame.f_lineno
        self.owner: Deadline = self  # `at` is set on entering

    @property
    def where(self) -> str:
        """Where the deadline was made, as ``file:line`` (empty when unknown)."""
        code = self._code
        return "" if code is None else f"{code.co_filename}:{self._line}"

    def _fresh(self) -> Deadline:
        """A deadline of the same length and origin, for one call of a decorated callable."""
        scope = deadline.__new__(deadline)
        scope.seconds = self.seconds
        scope._code = self._code
        scope._line = self._line
        scope.at = _INF
        scope.owner = scope
        return scope

    def error(self, name: str = "", **detail: str) -> DeadlineExceededError:
        """The error that says this deadline (or the outer one that set its end) passed."""
        owner = self.owner
        return DeadlineExceededError(owner.seconds, where=owner.where, name=name, **detail)

    def describe(self) -> str:
        """The governing deadline in words, for notes: ``the deadline of 2 s set at f.py:3``."""
        owner = self.owner
        where = owner.where
        at = f" set at {where}" if where else ""
        return f"the deadline of {owner.seconds:g} s{at}"

    # -- sync ------------------------------------------------------------------------------

    def __enter__(self) -> Deadline:
        at = _now(None).monotonic() + self.seconds
        outer = _current.get()
        if outer is not None and outer.at <= at:  # an inner deadline never extends an outer
            self.at = outer.at
            self.owner = outer.owner
        else:
            self.at = at
            self.owner = self
        self._token: Token[Deadline | None] = _current.set(self)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        _current.reset(self._token)

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
