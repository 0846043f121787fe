"""
``ThrottleLayer``: refuse a call locally with the SRE probability, then count how it ended.

The probability comes from the counts before the call (``ThrottleBackend.probability``); a
refused call is counted as a request at once and raises ``ThrottledError``; an admitted call
is counted when it ends: a request, and an accept unless it raised an exception matching
the policy's ``on``. Control-flow exceptions (cancellation, ``KeyboardInterrupt``...) are
not counted at all. Throttling is advisory: an unreachable store lets the call through
(with ``resilience.store.unavailable``), never replacing its outcome.
"""

from __future__ import annotations

import random

from collections.abc import Callable
from typing import Any, ClassVar

from resilience import _clock, _config
from resilience._decorating import Kind, Layer, Runner, terminal
from resilience._errors import StoreUnavailableError, ThrottledError
from resilience._rate.layer import EPOCH
from resilience._throttle.state import (
    MemoryThrottleBackend,
    Tally,
    ThrottleBackend,
    ThrottlePolicy,
    _speedups,
)
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import store_unavailable
from resilience.telemetry._bus import BUS, emit


__all__ = ["ThrottleLayer"]


def _unavailable(error: StoreUnavailableError) -> None:
    store_unavailable(error, decorator="throttled", fail_open=True)


class ThrottleLayer(Layer):
    """``@throttled``'s layer: draw against the probability, count the outcome."""

    decorator = "throttled"
    __slots__ = ("_backend", "_epoch", "_own", "_remote", "_tally", "key")
    policy: ThrottlePolicy
    #: Whether the sync runner's fast path runs in C when the accelerator is built (False:
    #: the Python runner alone, for the tests and benchmarks that compare the two).
    accelerated: ClassVar[bool] = True

    def __init__(self, policy: ThrottlePolicy) -> None:
        super().__init__(policy)
        self.key = ""
        self._epoch = -1
        self._remote = False
        self._tally: Tally | None = None
        self._own = None if policy.key is not None else MemoryThrottleBackend(policy)

    def bind(self, kind: Kind, qualname: str) -> None:
        """Take the key (or count alone) and refuse generators."""
        self.name = qualname
        self.key = self.policy.key or qualname
        if kind in ("gen", "asyncgen"):
            msg = (
                f"@throttled does not support generator functions ({qualname}): "
                f"decorate the function that consumes them instead"
            )
            raise TypeError(msg)
        self._refresh()

    def _refresh(self) -> ThrottleBackend:
        """Fetch the key's counts; again after ``resilience.testing.reset()``."""
        backend: ThrottleBackend
        if self._own is not None:
            backend = self._own
        else:
            store = self.policy.store or DEFAULT_STORE
            backend = store.backend("throttle", self.key, self.policy)
        self._backend = backend
        self._remote = not isinstance(backend, MemoryThrottleBackend)
        # A memory throttle's tally, read inline by the runners; None: a remote store. (The
        # tally before the epoch: the C runner takes a current epoch to mean a current tally.)
        self._tally = None if self._remote else backend._state.tally  # type: ignore[attr-defined]
        self._epoch = EPOCH.n
        return backend

    def _counts(self) -> Tally | None:
        """``_refresh``, answering the memory tally the runners read (None: remote)."""
        self._refresh()
        return self._tally

    def _failed(self, exc: BaseException) -> None:
        """A memory throttle's call raised *exc*: count it (an accept unless it matches ``on``)."""
        self._backend.record(not self.policy._is_failure(exc))

    def _late(self, now: float) -> None:
        """A memory throttle's accept at *now*, after its bucket ended: roll, under the lock."""
        self._backend.accept(now)  # type: ignore[attr-defined] # a memory one

    def _refuse(self, backend: ThrottleBackend, probability: float, req: int, acc: int) -> None:
        try:
            backend.record(False)
        except StoreUnavailableError as error:
            _unavailable(error)
        self._refuse_counted(probability, req, acc)

    def _record(self, backend: ThrottleBackend, accepted: bool) -> None:
        try:
            backend.record(accepted)
        except StoreUnavailableError as error:
            _unavailable(error)

    def _draw(self, backend: ThrottleBackend) -> None:
        """Refuse the call with the current probability (a remote store: one round trip)."""
        try:
            probability, req, acc = backend.probability()
        except StoreUnavailableError as error:
            _unavailable(error)
            return
        if probability > 0.0 and (self.policy.rand or random.random)() < probability:
            self._refuse(backend, probability, req, acc)

    async def _adraw(self, backend: Any) -> None:
        try:
            probability, req, acc = await backend.aprobability()
        except StoreUnavailableError as error:
            _unavailable(error)
            return
        if probability > 0.0 and (self.policy.rand or random.random)() < probability:
            try:
                await backend.arecord(False)
            except StoreUnavailableError as error:
                _unavailable(error)
            self._refuse_counted(probability, req, acc)

    def _refuse_counted(self, probability: float, req: int, acc: int) -> None:
        if BUS.subs:
            emit(
                "resilience.throttle.rejected",
                {"probability": probability, "requests": float(req), "accepts": float(acc)},
                {"key": self.key, "name": self.name},
            )
        raise ThrottledError(self.key, probability=probability, requests=req, accepts=acc)

    async def _arecord(self, backend: Any, accepted: bool) -> None:
        try:
            await backend.arecord(accepted)
        except StoreUnavailableError as error:
            _unavailable(error)

    def build_sync(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        direct = call_next is terminal
        source = self.policy.clock or _clock.DEFAULT  # its ``monotonic``: the clock in force

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            tally = layer._tally if layer._epoch == epoch.n else layer._counts()
            if tally is None:
                return layer._run_remote(call_next, wrapped, instance, args, kwargs)
            calm = tally.calm  # 2: nothing to draw; 1: nothing while the bucket is current
            if calm != 2 and not (calm and source.monotonic() < tally.until):
                layer._draw(layer._backend)
            try:
                if direct:  # innermost: call the function itself, one frame less
                    # (without keywords: no copy of the empty dict)
                    result = wrapped(*args, **kwargs) if kwargs else wrapped(*args)
                else:
                    result = call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                layer._failed(exc)
                raise
            # An accept: ``MemoryThrottleBackend.accept``, inline (one atomic count).
            now = source.monotonic()
            if now < tally.until:
                tally.accept()
            else:
                layer._late(now)
            return result

        if _speedups is None or not self.accelerated:
            return run
        # The same runner's fast path in C (no frame); anything else it hands to ``run``.
        runner: Runner = _speedups.ThrottleRunner(
            self,
            epoch,
            switches,
            source,
            None if direct else call_next,
            run,
            self._failed,
            self._late,
        )
        return runner

    def _run_remote(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A remote store: one round trip to draw, one to count."""
        backend = self._backend
        self._draw(backend)
        try:
            result = call_next(wrapped, instance, args, kwargs)
        except Exception as exc:
            self._record(backend, not self.policy._is_failure(exc))
            raise
        self._record(backend, True)
        return result

    def build_async(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        direct = call_next is terminal
        source = self.policy.clock or _clock.DEFAULT  # its ``monotonic``: the clock in force

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            tally = layer._tally if layer._epoch == epoch.n else layer._counts()
            if tally is None:
                return await layer._arun_remote(call_next, wrapped, instance, args, kwargs)
            calm = tally.calm  # 2: nothing to draw; 1: nothing while the bucket is current
            if calm != 2 and not (calm and source.monotonic() < tally.until):
                layer._draw(layer._backend)
            try:
                if direct:  # innermost: await the function itself, one frame less
                    # (without keywords: no copy of the empty dict)
                    result = await (wrapped(*args, **kwargs) if kwargs else wrapped(*args))
                else:
                    result = await call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                layer._failed(exc)
                raise
            # An accept: ``MemoryThrottleBackend.accept``, inline (one atomic count).
            now = source.monotonic()
            if now < tally.until:
                tally.accept()
            else:
                layer._late(now)
            return result

        return run

    async def _arun_remote(
        self,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The async twin of ``_run_remote``."""
        backend: Any = self._backend
        await self._adraw(backend)
        try:
            result = await call_next(wrapped, instance, args, kwargs)
        except Exception as exc:
            await self._arecord(backend, not self.policy._is_failure(exc))
            raise
        await self._arecord(backend, True)
        return result
