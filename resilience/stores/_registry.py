"""
The part every store shares: one backend per (concern, key), built by registered factories.

Each concern defines the backend protocol it needs in its own package (``_breaker.contract``,
``_rate.state``, ``_bounded.pool``, ``_budget.state``); each *store* registers its
implementations of them (``stores._memory``, ``stores._redis``), by name
(``"resilience._breaker.redis:RedisBreaker"``), imported on first use. So the core never
imports a store's backends nor its client library, and a new store plugs in without editing
any concern. A decorator asks ``store.backend(concern, key, policy)`` and gets the same
backend as every other decorator of that key on that store.

Memory stays bounded however many keys come and go. A backend that *nothing else holds*
(no decorator, no window handle: only this registry) and that is *idle* (its ``idle()``
says a fresh backend would behave the same: a closed window, a rate log older than its
window, no permit held, a closed breaker with nothing counted, a budget window gone by) is
released by a sweep, which runs every so many new keys (amortised O(1)) or on ``sweep()``.
A backend without ``idle()`` is released when unheld only if the store says its state
lives elsewhere (``stateless_backends``, as Redis handles do). ``max_keys`` adds a cap with
least-recently-used eviction of unheld backends, for unbounded key spaces.
"""

from __future__ import annotations

import importlib
import sys
import threading

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from resilience._validate import check_int
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience._errors import StoreUnavailableError


__all__ = ["BackendRegistry", "Factory", "on_sweep", "resolve", "store_unavailable"]

Factory = Callable[[str, Any, Any], Any]
"""``(key, policy, store) -> backend``."""


def resolve(path: str) -> Any:
    """Import ``"package.module:attr.attr"`` and return the attribute (a factory by name)."""
    module, _, attrs = path.partition(":")
    found: Any = importlib.import_module(module)
    for attr in attrs.split("."):
        found = getattr(found, attr)
    return found


def store_unavailable(error: StoreUnavailableError, *, decorator: str, fail_open: bool) -> None:
    """
    Emit ``resilience.store.unavailable`` for *error*, then re-raise it unless *fail_open*.

    Every stateful layer calls this in its ``except StoreUnavailableError`` branch: with
    ``fail_open`` the call then proceeds as if admitted (no count, no token, no permit).
    The event's metadata: ``key``, ``store``, ``decorator``, ``fail_open``; its measurement:
    ``timeout`` (seconds).
    """
    if BUS.subs:
        emit(
            "resilience.store.unavailable",
            {"timeout": error.timeout or 0.0},
            {
                "key": error.key,
                "store": error.store,
                "decorator": decorator,
                "fail_open": fail_open,
            },
        )
    if not fail_open:
        raise error


#: Called after every sweep with the store (other registries keyed by name prune there).
_sweepers: list[Callable[[Any], object]] = []


def on_sweep(callback: Callable[[Any], object]) -> None:
    """Run *callback(store)* after each sweep of any store."""
    _sweepers.append(callback)


def _refs(backends: dict[tuple[str, str], Any], key: tuple[str, str]) -> int:
    """References to the backend under *key*: the dict's, this frame's and the call's."""
    backend = backends.get(key)
    return sys.getrefcount(backend)


def _baseline() -> int:
    """What ``_refs`` says for an object only the dict holds (calibrated, not assumed)."""
    probe: dict[tuple[str, str], Any] = {("", ""): object()}
    return _refs(probe, ("", ""))


_UNHELD = _baseline() if hasattr(sys, "getrefcount") else -1


def _release(backend: Any) -> None:
    """
    Retire a released backend that can be retired (a breaker).

    A decorator that fetched it without the lock just as it went then fetches the store's
    new one, so no key's state splits in two.
    """
    retire = getattr(backend, "retire", None)
    if retire is not None:
        retire()


#: Concerns whose backends other backends hold (swept after their holders).
_HELD_CONCERNS = frozenset({"window", "pool"})

#: New keys between two sweeps: at least this many, and at least half the store's size.
SWEEP_EVERY = 1024


class BackendRegistry:
    """Backends by (concern, key), made once under a re-entrant lock, read without one."""

    _factories: ClassVar[dict[str, Factory | str]]
    #: Whether a backend's state lives outside the process (so an unheld one can always go).
    stateless_backends: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._factories = {}  # each store class registers its own; subclasses inherit them

    def __init__(self, *, max_keys: int | None = None) -> None:
        if max_keys is not None:
            check_int(type(self).__name__, "max_keys", max_keys, low=1)
        self._backends: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # factories may ask the store for other backends
        self.max_keys = max_keys
        self._created = 0  # new keys since the last sweep
        self._peak = 0  # the most keys since the dict was last rebuilt
        self.evicted = 0  # backends released, in all

    @classmethod
    def register(cls, concern: str, factory: Factory | str) -> None:
        """
        Make *factory(key, policy, store)* build this store's backends of *concern*.

        *factory* may be a name, ``"package.module:attr"``, imported when the first backend of
        *concern* is built.
        """
        cls._factories[concern] = factory

    def backend(self, concern: str, key: str, policy: Any) -> Any:
        """Return the backend of *concern* for *key*, built from *policy* on first use."""
        backends = self._backends
        found = backends.get((concern, key))
        if found is None:
            with self._lock:
                backends = self._backends  # a sweep may have rebuilt it meanwhile
                found = backends.get((concern, key))
                if found is None:
                    found = self._factory(concern)(key, policy, self)
                    backends[(concern, key)] = found
                    self._created += 1
                    self._peak = max(self._peak, len(backends))
                    if self._created >= max(SWEEP_EVERY, len(backends) >> 1):
                        self.sweep()
                    elif self.max_keys is not None and len(backends) > self.max_keys:
                        self._evict_lru()
        elif self.max_keys is not None:  # most recently used goes last
            with self._lock:
                backends = self._backends
                if backends.get((concern, key)) is found:
                    del backends[(concern, key)]
                    backends[(concern, key)] = found
        return found

    def sweep(self) -> int:
        """
        Release every backend that nothing else holds and that is idle; return how many.

        It runs on its own every so many new keys; call it to release memory at once.
        """
        with self._lock:
            self._created = 0
            backends = self._backends
            released = 0
            # holders first: a rate budget holds its key's window and a waiting room its pool,
            # which are unheld once their holder is gone
            keys = list(backends)
            keys.sort(key=lambda key: key[0] in _HELD_CONCERNS)
            for key in keys:
                if _refs(backends, key) <= _UNHELD and self._idle(backends[key]):
                    _release(backends.pop(key))
                    released += 1
            self.evicted += released
            if self.max_keys is not None and len(backends) > self.max_keys:
                released += self._evict_lru()
            if len(backends) * 4 < self._peak:
                # a dict never gives back the room of deleted keys: copy the survivors
                self._backends = dict(backends)
                self._peak = len(backends)
        for callback in _sweepers:
            callback(self)
        return released

    def _idle(self, backend: Any) -> bool:
        idle = getattr(backend, "idle", None)
        if idle is None:
            return self.stateless_backends
        try:
            return bool(idle())
        except Exception:  # a backend that cannot tell is kept
            return False

    def _evict_lru(self) -> int:
        """Release the least recently used unheld backends until ``max_keys`` is met."""
        backends = self._backends
        assert self.max_keys is not None
        excess = len(backends) - self.max_keys
        released = 0
        for key in list(backends):
            if released >= excess:
                break
            if _refs(backends, key) <= _UNHELD:
                _release(backends.pop(key))
                released += 1
        self.evicted += released
        return released

    def _factory(self, concern: str) -> Factory:
        for klass in type(self).__mro__:
            table = vars(klass).get("_factories", {})
            factory = table.get(concern)
            if isinstance(factory, str):
                factory = table[concern] = resolve(factory)
            if factory is not None:
                return factory  # type: ignore[no-any-return]
        msg = f"{type(self).__name__} has no backend for {concern!r}"
        raise TypeError(msg)

    def _forget_backends(self) -> None:
        with self._lock:
            self._backends.clear()
