"""
``BreakerLayer``: how a call goes through a circuit breaker.

The state machine (closed, open, half-open) lives in a *backend*, one per breaker name and
store, which applies each step atomically: ``admit`` before a call, ``record`` after it.
The layer's drivers (sync, async, generator, async generator) only classify outcomes and
feed them in, so sync and async callers share one breaker and one set of rules.

The closed path is built to cost almost nothing: the driver reads ``backend.closed`` and
calls; on success it writes only if ``backend.dirty`` says there is something to reset (a
success while the consecutive count is already 0 changes nothing, so it needs no lock and
no write). Failures, refusals and probes take the backend's lock.
"""

from __future__ import annotations

import functools
import weakref

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from resilience import _clock, _config
from resilience._breaker.contract import FAILURE, IGNORED, SUCCESS, UNGUARDED
from resilience._breaker.registry import announce, backend_for, declared
from resilience._decorating import Layer, Passage, Runner, apump, terminal
from resilience._errors import CircuitOpenError, StoreUnavailableError
from resilience._fallback import Fallback
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import store_unavailable
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience._breaker.contract import Admission, BreakerBackend
    from resilience._decorating import Kind
    from resilience._policies import CircuitBreakerPolicy


__all__ = ["BreakerLayer"]


def _unrecorded(error: StoreUnavailableError) -> None:
    """The call has run: a store that cannot take its outcome is reported, never raised."""
    store_unavailable(error, decorator="circuit_breaker", fail_open=True)


def _no_answer(exc: BaseException) -> Any:  # pragma: no cover - never called without fallback
    raise exc


class BreakerLayer(Layer):
    """``@circuit_breaker``'s layer: classifies outcomes and feeds them to the backend."""

    decorator = "circuit_breaker"
    __slots__ = ("__weakref__", "backend", "fallback", "is_failure", "on_result", "store")
    policy: CircuitBreakerPolicy

    def __init__(self, policy: CircuitBreakerPolicy) -> None:
        super().__init__(policy)
        self.store: Any = DEFAULT_STORE if policy.store is None else policy.store
        self.is_failure = policy._is_failure
        self.on_result = policy.on_result
        self.fallback = Fallback(policy.fallback) if policy.fallback is not None else None
        self.backend: BreakerBackend

    def bind(self, kind: Kind, qualname: str) -> None:
        policy = self.policy
        self.name = policy.name or qualname
        if policy.on_result is not None and kind in ("gen", "asyncgen"):
            msg = (
                f"@circuit_breaker(on_result=...) does not apply to generator functions "
                f"({qualname})"
            )
            raise TypeError(msg)
        if self.fallback is not None:
            self.fallback.check("circuit_breaker", kind, qualname)
        self.backend = backend_for(self.store, self.name, policy)
        declared.setdefault(self.store, {}).setdefault(self.name, weakref.WeakSet()).add(self)

    # -- shared steps (the slow path) ---------------------------------------------------------

    def _current(self) -> BreakerBackend:
        backend = self.backend
        if backend.retired:
            backend = self.backend = backend_for(self.store, self.name, self.policy)
        return backend

    def _admit(self, backend: BreakerBackend) -> int | CircuitOpenError:
        """Return the call's ticket, or the error that refuses it."""
        try:
            admission = backend.admit()
        except StoreUnavailableError as error:
            return self._unguarded(error)
        return self._admitted(admission)

    async def _aadmit(self, backend: BreakerBackend) -> int | CircuitOpenError:
        """The async twin of ``_admit``."""
        try:
            admission = await backend.aadmit()
        except StoreUnavailableError as error:
            return self._unguarded(error)
        return self._admitted(admission)

    def _unguarded(self, error: StoreUnavailableError) -> int:
        """The store cannot admit: raise, or let the call run unguarded (``fail_open``)."""
        store_unavailable(error, decorator="circuit_breaker", fail_open=self.policy.fail_open)
        return UNGUARDED

    def _admitted(self, admission: Admission) -> int | CircuitOpenError:
        if admission.transition is not None:
            announce(admission.transition)
        if admission.ticket >= 0:
            return admission.ticket
        clock = _clock.resolve(self.policy.clock)
        error = CircuitOpenError(
            self.name,
            admission.retry_after,
            opened_at=clock.time() - admission.open_for,
            reason=admission.reason,
            state=admission.state,
        )
        if BUS.subs:
            emit(
                "resilience.breaker.rejected",
                {"retry_after": error.retry_after},
                {"name": self.name, "state": admission.state, "reason": admission.reason},
            )
        return error

    def _record(self, backend: BreakerBackend, ticket: int, outcome: int) -> None:
        # The call has run: a store that cannot take its outcome is reported, never raised,
        # so the caller gets the call's own result or exception in either fail mode.
        if ticket == UNGUARDED:
            return
        try:
            transition = backend.record(ticket, outcome)
        except StoreUnavailableError as error:
            _unrecorded(error)
            return
        if transition is not None:
            announce(transition)

    async def _arecord(self, backend: BreakerBackend, ticket: int, outcome: int) -> None:
        if ticket == UNGUARDED:
            return
        try:
            transition = await backend.arecord(ticket, outcome)
        except StoreUnavailableError as error:
            _unrecorded(error)
            return
        if transition is not None:
            announce(transition)

    def _judge_exception(
        self, exc: BaseException, ticket: int
    ) -> tuple[int | None, BaseException | None]:
        """What to record for a raised *exc* (None: nothing), and what ``on`` raised."""
        try:
            failed = self.is_failure(exc)
        except BaseException as error:  # re-raised by the caller, after recording
            return (IGNORED if ticket else None), error
        if failed and _config.state.active:
            return FAILURE, None
        return (IGNORED if ticket else None), None

    def _judge_result(
        self, backend: BreakerBackend, result: Any, ticket: int
    ) -> tuple[int | None, BaseException | None]:
        """What to record for a returned *result* (None: nothing), and what ``on_result`` raised."""
        on_result = self.on_result
        outcome = SUCCESS
        if on_result is not None:
            try:
                failed = on_result(result)
            except BaseException as error:  # re-raised by the caller, after recording
                return (IGNORED if ticket else None), error
            if failed:
                outcome = FAILURE
        if outcome == SUCCESS and ticket == 0 and not backend.dirty:
            return None, None  # nothing to reset
        return (outcome if _config.state.active else IGNORED), None

    def _after_exception(self, backend: BreakerBackend, exc: BaseException, ticket: int) -> bool:
        """Record a raised exception; return whether the fallback answers for it."""
        outcome, error = self._judge_exception(exc, ticket)
        if outcome is not None:
            self._record(backend, ticket, outcome)
        if error is not None:
            raise error
        return outcome == FAILURE and self.fallback is not None

    async def _aafter_exception(
        self, backend: BreakerBackend, exc: BaseException, ticket: int
    ) -> bool:
        """The async twin of ``_after_exception``."""
        outcome, error = self._judge_exception(exc, ticket)
        if outcome is not None:
            await self._arecord(backend, ticket, outcome)
        if error is not None:
            raise error
        return outcome == FAILURE and self.fallback is not None

    def _after_result(self, backend: BreakerBackend, result: Any, ticket: int) -> None:
        """Record a returned value (a failure if ``on_result`` says so)."""
        outcome, error = self._judge_result(backend, result, ticket)
        if outcome is not None:
            self._record(backend, ticket, outcome)
        if error is not None:
            raise error

    async def _aafter_result(self, backend: BreakerBackend, result: Any, ticket: int) -> None:
        """The async twin of ``_after_result``."""
        outcome, error = self._judge_result(backend, result, ticket)
        if outcome is not None:
            await self._arecord(backend, ticket, outcome)
        if error is not None:
            raise error

    # -- sync -----------------------------------------------------------------------------------

    def build_sync(self, call_next: Runner) -> Runner:
        layer = self
        after_exception = self._after_exception
        after_result = self._after_result
        slow = self._slow_sync
        answer = self.fallback.sync if self.fallback is not None else _no_answer

        if self.on_result is None and call_next is terminal:

            def direct(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                backend = layer.backend
                if backend.closed:
                    try:
                        result = wrapped(*args, **kwargs)
                    except BaseException as exc:
                        if after_exception(backend, exc, 0):
                            return answer(exc)
                        raise
                    if backend.dirty:
                        after_result(backend, result, 0)
                    return result
                return slow(call_next, wrapped, instance, args, kwargs)

            return direct

        checks_results = self.on_result is not None

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            backend = layer.backend
            if backend.closed:
                try:
                    result = call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    if after_exception(backend, exc, 0):
                        return answer(exc)
                    raise
                if checks_results or backend.dirty:
                    after_result(backend, result, 0)
                return result
            return slow(call_next, wrapped, instance, args, kwargs)

        return runner

    def _slow_sync(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend = self._current()
        if not _config.state.active:
            return call_next(wrapped, instance, args, kwargs)
        ticket = self._admit(backend)
        if isinstance(ticket, CircuitOpenError):
            if self.fallback is not None:
                return self.fallback.sync(ticket)
            raise ticket
        try:
            result = call_next(wrapped, instance, args, kwargs)
        except BaseException as exc:
            if self._after_exception(backend, exc, ticket):
                return self.fallback.sync(exc)  # type: ignore[union-attr]
            raise
        self._after_result(backend, result, ticket)
        return result

    # -- async ----------------------------------------------------------------------------------

    def build_async(self, call_next: Runner) -> Runner:
        layer = self
        # awaited: a Redis backend records with a round trip, never blocking the loop
        after_exception = self._aafter_exception
        after_result = self._aafter_result
        slow = self._slow_async
        checks_results = self.on_result is not None
        fallback = self.fallback

        if call_next is terminal and not checks_results:

            async def direct(
                wrapped: Callable[..., Any],
                instance: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                backend = layer.backend
                if backend.closed:
                    try:
                        result = await wrapped(*args, **kwargs)
                    except BaseException as exc:
                        if await after_exception(backend, exc, 0):
                            return await fallback.asynchronous(exc)  # type: ignore[union-attr]
                        raise
                    if backend.dirty:
                        await after_result(backend, result, 0)
                    return result
                return await slow(call_next, wrapped, instance, args, kwargs)

            return direct

        async def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            backend = layer.backend
            if backend.closed:
                try:
                    result = await call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    if await after_exception(backend, exc, 0):
                        return await fallback.asynchronous(exc)  # type: ignore[union-attr]
                    raise
                if checks_results or backend.dirty:
                    await after_result(backend, result, 0)
                return result
            return await slow(call_next, wrapped, instance, args, kwargs)

        return runner

    async def _slow_async(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend = self._current()
        if not _config.state.active:
            return await call_next(wrapped, instance, args, kwargs)
        ticket = await self._aadmit(backend)
        if isinstance(ticket, CircuitOpenError):
            if self.fallback is not None:
                return await self.fallback.asynchronous(ticket)
            raise ticket
        try:
            result = await call_next(wrapped, instance, args, kwargs)
        except BaseException as exc:
            if await self._aafter_exception(backend, exc, ticket):
                return await self.fallback.asynchronous(exc)  # type: ignore[union-attr]
            raise
        await self._aafter_result(backend, result, ticket)
        return result

    # -- generators (admitted on the first item; a consumer closing early is no failure) --------

    def build_gen(self, call_next: Runner) -> Runner:
        layer = self

        def runner(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Generator[Any, Any, Any]:
            backend = layer._current()
            if not _config.state.active:
                return (yield from call_next(wrapped, instance, args, kwargs))
            ticket = layer._admit(backend)
            if isinstance(ticket, CircuitOpenError):
                raise ticket
            try:
                result = yield from call_next(wrapped, instance, args, kwargs)
            except GeneratorExit:
                layer._after_result(backend, None, ticket)
                raise
            except BaseException as exc:
                layer._after_exception(backend, exc, ticket)
                raise
            layer._after_result(backend, result, ticket)
            return result

        return runner

    def build_asyncgen(self, call_next: Runner) -> Runner:
        layer = self

        async def start() -> Passage:
            backend = layer._current()
            if not _config.state.active:
                return _UNRECORDED
            ticket = await layer._aadmit(backend)
            if isinstance(ticket, CircuitOpenError):
                raise ticket
            return _Recorded(layer, backend, ticket)

        return functools.partial(apump, start, call_next)  # (wrapped, instance, args, kwargs)


_UNRECORDED = Passage()  # the library is switched off: the generator runs unguarded


class _Recorded(Passage):
    """An async generator's way through the breaker: its end is the call's outcome."""

    __slots__ = ("backend", "layer", "ticket")

    def __init__(self, layer: BreakerLayer, backend: BreakerBackend, ticket: int) -> None:
        self.layer, self.backend, self.ticket = layer, backend, ticket

    async def aended(self, exc: BaseException | None) -> None:
        if exc is None:
            await self.layer._aafter_result(self.backend, None, self.ticket)
        else:
            await self.layer._aafter_exception(self.backend, exc, self.ticket)
