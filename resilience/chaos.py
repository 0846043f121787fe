"""
Fault injection: prove that a stack survives an outage before production does.

Three decorators for sync and async callables (and generator functions), meant to go
innermost in a stack, right around the real call::

    @retry(attempts=5)
    @inject_fault(ConnectionError("injected"), rate=0.3, seed=7)
    async def fetch(): ...

- ``inject_fault(error, *, rate, enabled=True, seed=None)`` raises *error* instead of
  calling (an exception instance, raised as that same object each time; a class; or a
  zero-argument callable returning one).
- ``inject_latency(delay, *, rate, enabled=True, seed=None)`` waits *delay* seconds
  through the clock (virtual under ``resilience.testing.virtual_time()``), then calls.
- ``inject_result(result, *, rate, enabled=True, seed=None)`` returns *result* instead of
  calling (for a generator function: yields from *result*).

*rate* in [0, 1] is the share of calls affected; a decorator at rate 0 never injects and
returns the callable itself, so it costs nothing. *enabled* is a bool or a zero-argument
callable asked on each call. A *seed* makes which calls are affected reproducible.
``set_enabled(False)`` turns all injection off in this process, as does
``RESILIENCE_CHAOS=0`` (or ``false``, ``no``, ``off``) in the environment, read when this
module is imported. Each injection emits ``resilience.chaos.fault``, ``.latency`` or
``.result``.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import os
import random
import threading

from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from resilience import _clock, _config, _exports
from resilience._decorating import Layer, Runner, apply
from resilience._validate import check_number, duration
from resilience.telemetry._bus import BUS, emit


__all__ = ["inject_fault", "inject_latency", "inject_result", "is_enabled", "set_enabled"]

P = ParamSpec("P")
R = TypeVar("R")

_OFF = frozenset({"0", "false", "no", "off"})


def _from_environment() -> bool:
    return os.environ.get("RESILIENCE_CHAOS", "").strip().lower() not in _OFF


class _Switch:
    """The process-wide switch: one attribute read per call."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = _from_environment()


_switch = _Switch()
_AT_IMPORT = _switch.on
_lock = threading.Lock()


class _Restore:
    """Returned by ``set_enabled``: as a context manager, puts the previous state back."""

    __slots__ = ("_previous",)

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        with _lock:
            _switch.on = self._previous


def set_enabled(enabled: bool) -> _Restore:
    """
    Turn every fault injection in this process on or off.

    Used as a context manager (``with set_enabled(False): ...``), the previous state comes
    back on exit.

    .. versionadded:: 0.2.0
    """
    if not isinstance(enabled, bool):
        msg = f"set_enabled() takes True or False, got {type(enabled).__name__} {enabled!r}"
        raise TypeError(msg)
    with _lock:
        previous = _switch.on
        _switch.on = enabled
    return _Restore(previous)


def is_enabled() -> bool:
    """
    Whether fault injection is on in this process (``set_enabled``, ``RESILIENCE_CHAOS``).

    .. versionadded:: 0.2.0
    """
    return _switch.on


def _reset() -> None:
    _switch.on = _AT_IMPORT


_config.on_reset(_reset)


class _ChaosLayer(Layer):
    """
    One injection: decide per call (switches, *enabled*, the seeded draw), then act.

    Subclasses implement ``act_sync`` / ``act_async`` (what to do instead of, or before,
    the call) and ``event`` (the event's name and numbers).
    """

    kind_name = ""
    __slots__ = ("_enabled", "_rand", "rate")

    def __init__(self, what: object, rate: float, enabled: object, seed: object) -> None:
        super().__init__(what)
        self.rate = rate
        self._enabled = enabled
        self._rand = random.Random(seed).random  # type: ignore[arg-type]  # checked by _check

    def hit(self) -> bool:
        """Whether this call is affected (asked once per call)."""
        if not _switch.on or not _config.state.active:
            return False
        enabled = self._enabled
        if enabled is not True and not (enabled() if callable(enabled) else enabled):
            return False
        return self.rate >= 1.0 or self._rand() < self.rate

    def emit(self, measurements: dict[str, float], metadata: dict[str, Any]) -> None:
        if BUS.subs:
            emit(
                f"resilience.chaos.{self.kind_name}",
                {"rate": self.rate, **measurements},
                {"name": self.name, **metadata},
            )

    def act_sync(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        raise NotImplementedError

    async def act_async(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        raise NotImplementedError

    def build_sync(self, call_next: Runner) -> Runner:
        hit, act = self.hit, self.act_sync

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if hit():
                return act(call_next, (wrapped, instance, args, kwargs))
            return call_next(wrapped, instance, args, kwargs)

        return run

    def build_async(self, call_next: Runner) -> Runner:
        hit, act = self.hit, self.act_async

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if hit():
                return await act(call_next, (wrapped, instance, args, kwargs))
            return await call_next(wrapped, instance, args, kwargs)

        return run

    def build_gen(self, call_next: Runner) -> Runner:
        hit, act = self.hit, self.act_sync

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Generator[Any, Any, Any]:
            # Decided when the generator starts, as the call itself would begin then.
            if hit():
                return (yield from act(call_next, (wrapped, instance, args, kwargs)))
            return (yield from call_next(wrapped, instance, args, kwargs))

        return run

    def build_asyncgen(self, call_next: Runner) -> Runner:
        hit = self.hit
        layer = self

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> AsyncGenerator[Any, Any]:
            if hit():
                agen = await layer.act_asyncgen(call_next, (wrapped, instance, args, kwargs))
            else:
                agen = call_next(wrapped, instance, args, kwargs)
            async for item in agen:
                yield item

        return run

    async def act_asyncgen(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        """For async generators: what to iterate instead of (or after waiting for) the call."""
        raise NotImplementedError


class _FaultLayer(_ChaosLayer):
    decorator = "inject_fault"
    kind_name = "fault"
    __slots__ = ()

    def error(self) -> BaseException:
        error = self.policy
        if isinstance(error, BaseException):
            made = error
        else:
            made = error()
            if not isinstance(made, BaseException):
                msg = (
                    f"inject_fault: the error factory {error!r} returned {made!r}, not an exception"
                )
                raise TypeError(msg)
        self.emit({}, {"error": made, "error_type": type(made).__name__})
        return made

    def act_sync(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        raise self.error()

    async def act_async(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        raise self.error()

    async def act_asyncgen(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        raise self.error()


class _LatencyLayer(_ChaosLayer):
    decorator = "inject_latency"
    kind_name = "latency"
    __slots__ = ()

    def _clock(self) -> Any:
        return _clock.resolve(None)

    def act_sync(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        delay: float = self.policy
        self.emit({"delay": delay}, {})
        self._clock().sleep(delay)
        return call_next(*call)

    async def act_async(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        delay: float = self.policy
        self.emit({"delay": delay}, {})
        await self._clock().asleep(delay)
        return await call_next(*call)

    async def act_asyncgen(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        delay: float = self.policy
        self.emit({"delay": delay}, {})
        await self._clock().asleep(delay)
        return call_next(*call)


class _ResultLayer(_ChaosLayer):
    decorator = "inject_result"
    kind_name = "result"
    __slots__ = ()

    def act_sync(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        self.emit({}, {"result": self.policy})
        return self.policy

    def build_gen(self, call_next: Runner) -> Runner:
        hit = self.hit
        layer = self

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Generator[Any, Any, Any]:
            if hit():
                layer.emit({}, {"result": layer.policy})
                yield from layer.policy
                return None
            return (yield from call_next(wrapped, instance, args, kwargs))

        return run

    async def act_async(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        self.emit({}, {"result": self.policy})
        return self.policy

    async def act_asyncgen(self, call_next: Runner, call: tuple[Any, Any, Any, Any]) -> Any:
        self.emit({}, {"result": self.policy})
        return _aiter(self.policy)


async def _aiter(items: Iterable[Any]) -> AsyncGenerator[Any, None]:
    for item in items:
        yield item


class _Injector:
    """What the ``inject_*`` functions return: a decorator applying a fresh layer."""

    __slots__ = ("_make", "rate")

    def __init__(self, make: Callable[[], _ChaosLayer] | None, rate: float) -> None:
        self._make = make
        self.rate = rate

    def __call__(self, target: Callable[P, R]) -> Callable[P, R]:
        if self._make is None:  # rate 0: never injects, so nothing to wrap
            return target
        decorated: Callable[P, R] = apply(self._make(), target)
        return decorated

    def __repr__(self) -> str:
        return f"<chaos injector rate={self.rate!r}>"


def _check(name: str, rate: object, enabled: object, seed: object) -> float:
    checked = check_number(name, "rate", rate, low=0.0, high=1.0)
    if not isinstance(enabled, bool) and not callable(enabled):
        msg = (
            f"{name}.enabled must be True, False or a zero-argument callable, "
            f"got {type(enabled).__name__} {enabled!r}"
        )
        raise TypeError(msg)
    if seed is not None and not isinstance(seed, int | float | str | bytes):
        msg = f"{name}.seed must be an int, float, str, bytes or None, got {type(seed).__name__}"
        raise TypeError(msg)
    return checked


def inject_fault(
    error: BaseException | type[BaseException] | Callable[[], BaseException],
    *,
    rate: float,
    enabled: bool | Callable[[], bool] = True,
    seed: int | float | str | bytes | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """
    Raise *error* instead of calling, on a share *rate* of calls.

    Args:
        error: An exception instance (raised as that same object every time), an exception
            class, or a zero-argument callable returning an exception.
        rate: The share of calls affected, in [0, 1].
        enabled: A bool, or a zero-argument callable asked on each call.
        seed: Makes which calls are affected reproducible.

    Raises:
        TypeError: For an *error* that is none of those.
        ValueError: For a *rate* outside [0, 1].

    .. versionadded:: 0.2.0
    """
    checked = _check("inject_fault", rate, enabled, seed)
    if not isinstance(error, BaseException) and not callable(error):
        msg = (
            f"inject_fault.error must be an exception, an exception class or a zero-argument "
            f"callable returning one, got {type(error).__name__} {error!r}"
        )
        raise TypeError(msg)
    if checked == 0.0:
        return _Injector(None, checked)
    return _Injector(lambda: _FaultLayer(error, checked, enabled, seed), checked)


def inject_latency(
    delay: float | timedelta,
    *,
    rate: float,
    enabled: bool | Callable[[], bool] = True,
    seed: int | float | str | bytes | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """
    Wait *delay* seconds (on the clock: virtual under ``virtual_time()``) before calling.

    Args:
        delay: Seconds (or a ``timedelta``), >= 0.
        rate: The share of calls affected, in [0, 1].
        enabled: A bool, or a zero-argument callable asked on each call.
        seed: Makes which calls are affected reproducible.

    Raises:
        ValueError: For a negative *delay* or a *rate* outside [0, 1].

    .. versionadded:: 0.2.0
    """
    checked = _check("inject_latency", rate, enabled, seed)
    seconds = duration("inject_latency", "delay", delay)
    if checked == 0.0:
        return _Injector(None, checked)
    return _Injector(lambda: _LatencyLayer(seconds, checked, enabled, seed), checked)


def inject_result(
    result: Any,
    *,
    rate: float,
    enabled: bool | Callable[[], bool] = True,
    seed: int | float | str | bytes | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """
    Return *result* instead of calling (a generator function yields from it instead).

    Args:
        result: The value returned (for a generator function: an iterable of items).
        rate: The share of calls affected, in [0, 1].
        enabled: A bool, or a zero-argument callable asked on each call.
        seed: Makes which calls are affected reproducible.

    Raises:
        ValueError: For a *rate* outside [0, 1].

    .. versionadded:: 0.2.0
    """
    checked = _check("inject_result", rate, enabled, seed)
    if checked == 0.0:
        return _Injector(None, checked)
    return _Injector(lambda: _ResultLayer(result, checked, enabled, seed), checked)


_exports.publish(__name__, globals())
