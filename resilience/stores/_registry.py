"""
The part every store shares: one backend per (concern, key), built by registered factories.

Each concern defines the backend protocol it needs in its own package (``_breaker.contract``,
``_rate.state``, ``_bounded.pool``, ``_budget.state``); each *store* registers its
implementations of them (``stores._memory``, ``stores._redis``), by name
(``"resilience._breaker.redis:RedisBreaker"``), imported on first use. So the core never
imports a store's backends nor its client library, and a new store plugs in without editing
any concern. A decorator asks ``store.backend(concern, key, policy)`` and gets the same
backend as every other decorator of that key on that store.
"""

from __future__ import annotations

import importlib
import threading

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience._errors import StoreUnavailableError


__all__ = ["BackendRegistry", "Factory", "resolve", "store_unavailable"]

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


class BackendRegistry:
    """Backends by (concern, key), made once under a re-entrant lock, read without one."""

    _factories: ClassVar[dict[str, Factory | str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._factories = {}  # each store class registers its own; subclasses inherit them

    def __init__(self) -> None:
        self._backends: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # factories may ask the store for other backends

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
        found = self._backends.get((concern, key))
        if found is None:
            with self._lock:
                found = self._backends.get((concern, key))
                if found is None:
                    found = self._factory(concern)(key, policy, self)
                    self._backends[(concern, key)] = found
        return found

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
