"""
``BoundedLayer``: how a call takes permits from a pool and gives them back.

The pool and its waiting room live in ``_bounded.pool``. The layer's fast path is
``PermitQueue.try_acquire`` inline (nobody waiting, then the backend's own ``try_acquire``)
and a release in a ``finally``, so permits come back on return, exception and cancellation;
only a caller that has to wait goes through ``_wait_sync``/``_wait_async``, which time the
wait, emit the wait or timeout event and raise ``BoundedTimeoutError``. A remote pool
(Redis) takes ``_run_remote``/``_arun_remote``: async twins and store-unavailable handling
(fail-open; a lost release is left to expire).
"""

from __future__ import annotations

import contextlib
import math

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilience import _clock, _config, _deadline
from resilience._bounded.adaptive import AdaptiveLimit, AdaptivePoolBackend
from resilience._bounded.pool import WATCH_HOOKS, MemoryPoolBackend, PermitQueue, lease_begin
from resilience._decorating import KeyedLayer, Runner, terminal
from resilience._errors import BoundedTimeoutError, StoreUnavailableError
from resilience._policies import BoundedPolicy
from resilience._rate.layer import EPOCH
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import store_unavailable
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience.typing import Clock


__all__ = ["BoundedLayer"]

# A memory pool's first snapshot: every layer fetches its pool again and, finding it
# watched, takes the path that records lease starts (``_run_leased``).
WATCH_HOOKS.append(EPOCH.bump)


class BoundedLayer(KeyedLayer):
    """``@bounded``'s layer: take permits before the call, give them back after it."""

    decorator = "bounded"
    __slots__ = ("_adaptive", "_detour", "_epoch", "_queue", "_remote", "_watched", "timeout")
    policy: BoundedPolicy

    def __init__(self, policy: BoundedPolicy) -> None:
        super().__init__(policy)
        self.timeout: float | None = policy.timeout  # type: ignore[assignment]
        self._epoch = -1
        self._remote = False
        self._adaptive = False
        self._watched = False
        self._detour = False  # remote or watched: the fixed runners' one check off the fast path

    def _refresh(self) -> PermitQueue:
        """Fetch (and check) the key's pool; again after ``resilience.testing.reset()``."""
        policy = self.policy
        store = policy.store or DEFAULT_STORE
        queue: PermitQueue = store.backend(
            "pool.queue", self.key, store.backend("pool", self.key, policy)
        )
        adaptive = getattr(queue.backend, "adaptive", None) is not None  # memory or Redis
        if adaptive or not isinstance(policy.limit, int):
            self._check_adaptive(queue)
        elif queue.backend.limit != policy.limit:
            msg = (
                f"@bounded key {self.key!r} already has a pool of {queue.backend.limit} units; "
                f"a pool sharing the key must use the same limit (got limit={policy.limit})"
            )
            raise ValueError(msg)
        self._queue = queue
        self._adaptive = adaptive
        # Memory pools never block: the runners call them inline; others go through
        # ``_run_remote``/``_arun_remote`` (async twins, store-unavailable handling).
        self._remote = not isinstance(queue.backend, MemoryPoolBackend)
        self._watched = getattr(queue.backend, "leases", None) is not None
        self._detour = self._remote or self._watched
        self._epoch = EPOCH.n
        return queue

    def _check_adaptive(self, queue: PermitQueue) -> None:
        """A key's adaptive pool is shared only by decorators given an equal ``AdaptiveLimit``."""
        backend = queue.backend
        limit = self.policy.limit
        held = getattr(backend, "adaptive", None)
        if held is None or held != limit:
            held = backend.limit if held is None else held
            msg = (
                f"@bounded key {self.key!r} already has a pool with limit={held!r}; a pool "
                f"sharing the key must use the same limit (got limit={limit!r})"
            )
            raise ValueError(msg)

    def _clock(self) -> Clock:
        return _clock.resolve(self.policy.clock)

    def _waited(
        self,
        queue: PermitQueue,
        got: bool,
        started: float,
        clock: Clock,
        timeout: float | None = None,
    ) -> None:
        waited = clock.monotonic() - started
        if BUS.subs:
            name = "resilience.bounded.wait" if got else "resilience.bounded.timeout"
            emit(
                name,
                {"waited": waited, "queue_depth": float(len(queue.waiters))},
                {
                    "key": self.key,
                    "name": self.name,
                    "limit": queue.backend.limit,
                    "weight": self.policy.weight,
                },
            )
        if not got:
            error = BoundedTimeoutError(
                self.key,
                limit=queue.backend.limit,
                weight=self.policy.weight,
                timeout=waited if timeout is None else timeout,
            )
            deadline = _deadline.current()
            if deadline is not None and timeout != self.timeout:
                error.add_note(f"resilience.bounded: waited until {deadline.describe()}")
            raise error

    def _timeout(self) -> float | None:
        """The policy's timeout, shortened to the time left before the current deadline."""
        left = _deadline.remaining()
        timeout = self.timeout
        return timeout if left is None or (timeout is not None and timeout <= left) else left

    def _wait_sync(self, queue: PermitQueue) -> None:
        clock: Clock = _clock.SYSTEM_CLOCK  # threads block on a real lock: measure real time
        started = clock.monotonic()
        timeout = self._timeout()
        got = queue.acquire(self.policy.weight, timeout)
        self._waited(queue, got, started, clock, timeout)

    async def _wait_async(self, queue: PermitQueue) -> None:
        clock = self._clock()
        started = clock.monotonic()
        timeout = self._timeout()
        got = await queue.acquire_async(self.policy.weight, timeout, clock)
        self._waited(queue, got, started, clock, timeout)

    # -- a remote store (Redis) ----------------------------------------------------------

    def _unavailable(self, error: StoreUnavailableError) -> None:
        """The store is unreachable: raise, or (fail-open) say so and run without permits."""
        store_unavailable(error, decorator="bounded", fail_open=self.policy.fail_open)

    def _release_failed(self, error: StoreUnavailableError) -> None:
        """A release did not reach the store: its lease expires by itself; never mask the call."""
        with contextlib.suppress(StoreUnavailableError):
            self._unavailable(error)

    def _run_remote(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        weight = self.policy.weight
        try:
            if queue.waiters or not queue.backend.try_acquire(weight):
                self._wait_sync(queue)
        except StoreUnavailableError as error:
            self._unavailable(error)
            return call_next(wrapped, instance, args, kwargs)
        try:
            return call_next(wrapped, instance, args, kwargs)
        finally:
            try:
                queue.release(weight)
            except StoreUnavailableError as error:
                self._release_failed(error)

    async def _arun_remote(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        weight = self.policy.weight
        try:
            if queue.waiters or not await queue.backend.atry_acquire(weight, self.timeout or None):
                await self._wait_async(queue)
        except StoreUnavailableError as error:
            self._unavailable(error)
            return await call_next(wrapped, instance, args, kwargs)
        try:
            return await call_next(wrapped, instance, args, kwargs)
        finally:
            try:
                await queue.arelease(weight)
            except StoreUnavailableError as error:
                self._release_failed(error)

    # -- a watched memory pool: each unit's lease start recorded (the snapshot's oldest_lease) --
    #
    # A lease is recorded before its units are taken and forgotten after they are back, so
    # a held unit always has a record (but for a waiter's, recorded just after its grant);
    # a wait is no lease: the record made before it is forgotten, and made again once
    # granted. Cancellation and timeouts go through the same ``finally``.

    def _run_leased(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend: MemoryPoolBackend = queue.backend  # type: ignore[assignment]
        weight = self.policy.weight
        lease = backend.record(weight)
        try:
            if queue.waiters or not backend.try_acquire(weight):
                backend.forget(lease)
                lease = ()
                self._wait_sync(queue)
                lease = backend.record(weight)
            try:
                return call_next(wrapped, instance, args, kwargs)
            finally:
                queue.release(weight)
        finally:
            backend.forget(lease)

    async def _arun_leased(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend: MemoryPoolBackend = queue.backend  # type: ignore[assignment]
        weight = self.policy.weight
        lease = backend.record(weight)
        try:
            if queue.waiters or not backend.try_acquire(weight):
                backend.forget(lease)
                lease = ()
                await self._wait_async(queue)
                lease = backend.record(weight)
            try:
                return await call_next(wrapped, instance, args, kwargs)
            finally:
                queue.release(weight)
        finally:
            backend.forget(lease)

    def _adaptive_turn(self, backend: AdaptivePoolBackend, in_use: int) -> bool:
        """A call starts holding *in_use*: count it in ``busy``; whether it is timed (stride)."""
        window = backend.window
        if window is None:
            return True
        if in_use > window.busy:  # noqa: PLR1730 - once per call: no call
            window.busy = in_use
        skip = backend.skip
        if skip:
            backend.skip = skip - 1
            return False
        backend.skip = backend.every
        return True

    def _adaptive_acquire(self, queue: PermitQueue, backend: AdaptivePoolBackend) -> int:
        """Take the call's units now if free (the units in use after; 0: it must wait)."""
        return 0 if queue.waiters else backend.try_acquire_used(self.policy.weight)

    def _adaptive_returned(
        self, queue: PermitQueue, backend: AdaptivePoolBackend, rtt: float | None, in_use: int
    ) -> None:
        """A call of the leased path returned: its sample (if timed) and its units back."""
        if rtt is not None:
            self._succeeded(queue, backend, rtt, in_use)
            return
        backend.release(self.policy.weight)
        if queue.waiters:
            queue.wake()

    def _run_adaptive_leased(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend: AdaptivePoolBackend = queue.backend  # type: ignore[assignment]
        lease = backend.record(self.policy.weight)
        try:
            in_use = self._adaptive_acquire(queue, backend)
            if not in_use:
                backend.forget(lease)
                lease = ()
                self._wait_sync(queue)
                in_use = backend.used
                lease = backend.record(self.policy.weight)
            monotonic = self._clock().monotonic
            started = monotonic() if self._adaptive_turn(backend, in_use) else None
            try:
                result = call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                rtt = None if started is None else monotonic() - started
                self._raised(queue, backend, exc, rtt, in_use)
                raise
            rtt = None if started is None else monotonic() - started
            self._adaptive_returned(queue, backend, rtt, in_use)
            return result
        finally:
            backend.forget(lease)

    async def _arun_adaptive_leased(
        self,
        queue: PermitQueue,
        call_next: Runner,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        backend: AdaptivePoolBackend = queue.backend  # type: ignore[assignment]
        lease = backend.record(self.policy.weight)
        try:
            in_use = self._adaptive_acquire(queue, backend)
            if not in_use:
                backend.forget(lease)
                lease = ()
                await self._wait_async(queue)
                in_use = backend.used
                lease = backend.record(self.policy.weight)
            monotonic = self._clock().monotonic
            started = monotonic() if self._adaptive_turn(backend, in_use) else None
            try:
                result = await call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                rtt = None if started is None else monotonic() - started
                self._raised(queue, backend, exc, rtt, in_use)
                raise
            rtt = None if started is None else monotonic() - started
            self._adaptive_returned(queue, backend, rtt, in_use)
            return result
        finally:
            backend.forget(lease)

    # -- an adaptive limit: time each call and feed its sample to the pool's algorithm --------

    def _moved(self, before: int, after: int, dropped: bool) -> None:
        emit(
            "resilience.bounded.limit",
            {"limit": float(after), "previous": float(before)},
            {"key": self.key, "name": self.name, "dropped": dropped},
        )

    def _ended(
        self,
        queue: PermitQueue,
        backend: AdaptivePoolBackend,
        rtt: float,
        in_use: int,
        dropped: bool,
        full: bool,
    ) -> None:
        """A call's end that may move the limit: apply it under the pool's lock, say so."""
        before = backend.limit
        if full:  # Gradient2's window is full: its samples are in, close it
            backend.close_release(self.policy.weight)
        else:
            backend.sample_release(self.policy.weight, rtt, in_use, dropped)
        if queue.waiters:
            queue.wake()
        if BUS.subs and backend.limit != before:
            self._moved(before, backend.limit, dropped)

    def _raised(
        self,
        queue: PermitQueue,
        backend: AdaptivePoolBackend,
        exc: BaseException,
        rtt: float | None,
        in_use: int,
    ) -> None:
        """
        A call raised: a drop (``on_drop``) or a plain sample; control flow: no sample.

        *rtt* None: an untimed call of a Gradient2 window (``Gradient2.stride``); its drop
        counts all the same (drops are never sampled), a plain failure gives no sample.
        """
        if not isinstance(exc, Exception):  # cancellation, exit: neither drop nor latency
            queue.release(self.policy.weight)
            return
        adaptive = self.policy.limit
        assert isinstance(adaptive, AdaptiveLimit)
        dropped = False
        try:
            dropped = adaptive.is_drop(exc)
        finally:
            if rtt is None and not dropped:
                queue.release(self.policy.weight)
            else:
                self._ended(
                    queue, backend, math.nan if rtt is None else rtt, in_use, dropped, False
                )

    def _succeeded(
        self, queue: PermitQueue, backend: AdaptivePoolBackend, rtt: float, in_use: int
    ) -> None:
        """A call returned: its sample, and the permit back (inline in the runners)."""
        window = backend.window
        if window is None:
            self._ended(queue, backend, rtt, in_use, False, False)
        elif window.add(rtt, in_use):
            self._ended(queue, backend, rtt, in_use, False, True)
        else:
            backend.release(self.policy.weight)
            if queue.waiters:
                queue.wake()

    def _build_adaptive_sync(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight
        single = weight == 1
        policy_clock = self.policy.clock
        default = _clock.DEFAULT
        direct = call_next is terminal

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            if layer._watched:  # lease starts recorded: the slow path
                return layer._run_adaptive_leased(queue, call_next, wrapped, instance, args, kwargs)
            backend: AdaptivePoolBackend = queue.backend  # type: ignore[assignment]
            in_use = 0
            if single and not queue.waiters:  # one unit: ``try_acquire_used(1)``, inline
                try:
                    backend._pop()
                except IndexError:  # none free: wait
                    pass
                else:
                    in_use = backend.repay() if backend.debt else backend.limit - len(backend._free)
            elif not queue.waiters:
                in_use = backend.try_acquire_used(weight)
            if not in_use:
                layer._wait_sync(queue)
                in_use = backend.used
            skip = backend.skip
            if skip:  # a wide Gradient2 window, not this call's turn to be timed: no clock read
                backend.skip = skip - 1
                window = backend.window
                assert window is not None
                if in_use > window.busy:  # noqa: PLR1730 - hot path: no call
                    window.busy = in_use
                try:
                    if direct:
                        result = wrapped(*args, **kwargs)
                    else:
                        result = call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    layer._raised(queue, backend, exc, None, in_use)
                    raise
                if single and not backend.debt:
                    backend._push(None)
                else:
                    backend.release(weight)
                if queue.waiters:
                    queue.wake()
                return result
            every = backend.every
            if every:  # this call is timed: count down to the next one
                backend.skip = every
            monotonic = (policy_clock or default.clock).monotonic  # _clock.resolve, inline
            started = monotonic()
            try:
                if direct:  # innermost: call the function itself, one frame less
                    result = wrapped(*args, **kwargs)
                else:
                    result = call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                layer._raised(queue, backend, exc, monotonic() - started, in_use)
                raise
            rtt = monotonic() - started
            window = backend.window
            if window is None or not single or backend.debt:
                layer._succeeded(queue, backend, rtt, in_use)
                return result
            # ``Gradient2.add`` and ``release(1)``, inline and lock-free: the hot path
            if rtt > 0.0:  # a difference of monotonic reads: never inf or NaN
                window.total += rtt
                window.count += 1
            if in_use > window.busy:  # noqa: PLR1730 - hot path: no call
                window.busy = in_use
            if window.count >= window.due:  # the window is full: close it under the lock
                layer._ended(queue, backend, rtt, in_use, False, True)
                return result
            backend._push(None)
            if queue.waiters:
                queue.wake()
            return result

        return run

    def _build_adaptive_async(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight
        single = weight == 1
        policy_clock = self.policy.clock
        default = _clock.DEFAULT
        direct = call_next is terminal

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            if layer._watched:  # lease starts recorded: the slow path
                return await layer._arun_adaptive_leased(
                    queue, call_next, wrapped, instance, args, kwargs
                )
            backend: AdaptivePoolBackend = queue.backend  # type: ignore[assignment]
            in_use = 0
            if single and not queue.waiters:  # one unit: ``try_acquire_used(1)``, inline
                try:
                    backend._pop()
                except IndexError:  # none free: wait
                    pass
                else:
                    in_use = backend.repay() if backend.debt else backend.limit - len(backend._free)
            elif not queue.waiters:
                in_use = backend.try_acquire_used(weight)
            if not in_use:
                await layer._wait_async(queue)
                in_use = backend.used
            skip = backend.skip
            if skip:  # a wide Gradient2 window, not this call's turn to be timed: no clock read
                backend.skip = skip - 1
                window = backend.window
                assert window is not None
                if in_use > window.busy:  # noqa: PLR1730 - hot path: no call
                    window.busy = in_use
                try:
                    if direct:
                        result = await wrapped(*args, **kwargs)
                    else:
                        result = await call_next(wrapped, instance, args, kwargs)
                except BaseException as exc:
                    layer._raised(queue, backend, exc, None, in_use)
                    raise
                if single and not backend.debt:
                    backend._push(None)
                else:
                    backend.release(weight)
                if queue.waiters:
                    queue.wake()
                return result
            every = backend.every
            if every:  # this call is timed: count down to the next one
                backend.skip = every
            monotonic = (policy_clock or default.clock).monotonic  # _clock.resolve, inline
            started = monotonic()
            try:
                if direct:  # innermost: await the function itself, one frame less
                    result = await wrapped(*args, **kwargs)
                else:
                    result = await call_next(wrapped, instance, args, kwargs)
            except BaseException as exc:
                layer._raised(queue, backend, exc, monotonic() - started, in_use)
                raise
            rtt = monotonic() - started
            window = backend.window
            if window is None or not single or backend.debt:
                layer._succeeded(queue, backend, rtt, in_use)
                return result
            # ``Gradient2.add`` and ``release(1)``, inline and lock-free: the hot path
            if rtt > 0.0:  # a difference of monotonic reads: never inf or NaN
                window.total += rtt
                window.count += 1
            if in_use > window.busy:  # noqa: PLR1730 - hot path: no call
                window.busy = in_use
            if window.count >= window.due:  # the window is full: close it under the lock
                layer._ended(queue, backend, rtt, in_use, False, True)
                return result
            backend._push(None)
            if queue.waiters:
                queue.wake()
            return result

        return run

    # -- an adaptive limit in a remote store: the same samples, one script per call's end ------

    def _build_remote_adaptive_sync(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight
        adaptive = self.policy.limit
        assert isinstance(adaptive, AdaptiveLimit)
        is_drop = adaptive.is_drop
        policy_clock = self.policy.clock

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            backend: Any = (
                queue.backend
            )  # remote, adaptive: ``try_acquire_used``, ``sample_release``
            try:
                in_use = 0 if queue.waiters else backend.try_acquire_used(weight)
                if not in_use:
                    layer._wait_sync(queue)
                    in_use = backend.granted_in_use
            except StoreUnavailableError as error:
                layer._unavailable(error)
                return call_next(wrapped, instance, args, kwargs)
            clock = _clock.resolve(policy_clock)
            timed = backend.timed(in_use)  # Gradient2 times every stride-th call
            started = clock.monotonic() if timed else 0.0
            dropped: bool | None = False
            try:
                return call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                dropped = is_drop(exc)
                raise
            except BaseException:  # control flow: neither a drop nor a latency sample
                dropped = None
                raise
            finally:
                before = backend.limit
                try:
                    if dropped is None or not (timed or dropped):  # the fixed pool's release
                        queue.release(weight)
                    else:
                        rtt = clock.monotonic() - started if timed else math.nan
                        backend.sample_release(weight, rtt, in_use, dropped)
                        queue.wake()
                except StoreUnavailableError as error:
                    layer._release_failed(error)
                if BUS.subs and backend.limit != before:
                    layer._moved(before, backend.limit, bool(dropped))

        return run

    def _build_remote_adaptive_async(self, call_next: Runner) -> Runner:
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight
        adaptive = self.policy.limit
        assert isinstance(adaptive, AdaptiveLimit)
        is_drop = adaptive.is_drop
        policy_clock = self.policy.clock

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            backend: Any = (
                queue.backend
            )  # remote, adaptive: ``try_acquire_used``, ``sample_release``
            try:
                in_use = 0
                if not queue.waiters:
                    in_use = await backend.atry_acquire_used(weight, layer.timeout or None)
                if not in_use:
                    await layer._wait_async(queue)
                    in_use = backend.granted_in_use
            except StoreUnavailableError as error:
                layer._unavailable(error)
                return await call_next(wrapped, instance, args, kwargs)
            clock = _clock.resolve(policy_clock)
            timed = backend.timed(in_use)  # Gradient2 times every stride-th call
            started = clock.monotonic() if timed else 0.0
            dropped: bool | None = False
            try:
                return await call_next(wrapped, instance, args, kwargs)
            except Exception as exc:
                dropped = is_drop(exc)
                raise
            except BaseException:  # control flow: neither a drop nor a latency sample
                dropped = None
                raise
            finally:
                before = backend.limit
                try:
                    if dropped is None or not (timed or dropped):  # the fixed pool's release
                        await queue.arelease(weight)
                    else:
                        rtt = clock.monotonic() - started if timed else math.nan
                        await backend.asample_release(weight, rtt, in_use, dropped)
                        queue.wake()
                except StoreUnavailableError as error:
                    layer._release_failed(error)
                if BUS.subs and backend.limit != before:
                    layer._moved(before, backend.limit, bool(dropped))

        return run

    def build_sync(self, call_next: Runner) -> Runner:
        if not isinstance(self.policy.limit, int):
            if self._remote:
                return self._build_remote_adaptive_sync(call_next)
            return self._build_adaptive_sync(call_next)
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight
        direct = call_next is terminal
        default = _clock.DEFAULT
        begin = lease_begin

        def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            if layer._detour:  # a remote pool, or a watched one (lease starts recorded)
                if layer._remote or weight != 1:
                    run_slow = layer._run_remote if layer._remote else layer._run_leased
                    return run_slow(queue, call_next, wrapped, instance, args, kwargs)
                leases: dict[int, float] = queue.backend.leases  # type: ignore[attr-defined]
                # ``_run_leased`` for one unit, inline
                lease = begin(leases)
                if queue.waiters or not queue.backend.try_acquire(1):
                    del leases[lease]  # a wait is no lease
                    layer._wait_sync(queue)
                    leases[lease] = default.monotonic()
                try:
                    if direct:
                        return wrapped(*args, **kwargs)
                    return call_next(wrapped, instance, args, kwargs)
                finally:
                    queue.release(1)
                    del leases[lease]
            if queue.waiters or not queue.backend.try_acquire(weight):
                layer._wait_sync(queue)
            try:
                if direct:  # innermost: call the function itself, one frame less
                    return wrapped(*args, **kwargs)
                return call_next(wrapped, instance, args, kwargs)
            finally:
                queue.release(weight)

        return run

    def build_async(self, call_next: Runner) -> Runner:
        if not isinstance(self.policy.limit, int):
            if self._remote:
                return self._build_remote_adaptive_async(call_next)
            return self._build_adaptive_async(call_next)
        layer = self
        switches = _config.state
        epoch = EPOCH
        weight = self.policy.weight
        direct = call_next is terminal
        default = _clock.DEFAULT
        begin = lease_begin

        async def run(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not switches.active:
                return await call_next(wrapped, instance, args, kwargs)
            queue = layer._queue if layer._epoch == epoch.n else layer._refresh()
            if layer._detour:  # a remote pool, or a watched one (lease starts recorded)
                if layer._remote or weight != 1:
                    arun_slow = layer._arun_remote if layer._remote else layer._arun_leased
                    return await arun_slow(queue, call_next, wrapped, instance, args, kwargs)
                leases: dict[int, float] = queue.backend.leases  # type: ignore[attr-defined]
                # ``_arun_leased`` for one unit, inline
                lease = begin(leases)
                if queue.waiters or not queue.backend.try_acquire(1):
                    del leases[lease]  # a wait is no lease
                    await layer._wait_async(queue)
                    leases[lease] = default.monotonic()
                try:
                    if direct:
                        return await wrapped(*args, **kwargs)
                    return await call_next(wrapped, instance, args, kwargs)
                finally:
                    queue.release(1)
                    del leases[lease]
            if queue.waiters or not queue.backend.try_acquire(weight):
                await layer._wait_async(queue)
            try:
                if direct:  # innermost: await the function itself, one frame less
                    return await wrapped(*args, **kwargs)
                return await call_next(wrapped, instance, args, kwargs)
            finally:
                queue.release(weight)

        return run
