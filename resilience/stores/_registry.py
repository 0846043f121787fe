"""
The part every store shares: one backend per (concern, key), built by registered factories.

Each concern module registers a factory per store class (``MemoryStore.register("breaker",
...)``, ``RedisStore.register("breaker", ...)``); a decorator asks ``store.backend(concern,
key, policy)`` and gets the same backend as every other decorator of that key on that store.
"""

from __future__ import annotations

import threading

from collections.abc import Callable
from typing import Any, ClassVar


__all__ = ["BackendRegistry", "Factory"]

Factory = Callable[[str, Any, Any], Any]
"""``(key, policy, store) -> backend``."""


class BackendRegistry:
    """Backends by (concern, key), made once under a re-entrant lock, read without one."""

    _factories: ClassVar[dict[str, Factory]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._factories = {}  # each store class registers its own; subclasses inherit them

    def __init__(self) -> None:
        self._backends: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # factories may ask the store for other backends

    @classmethod
    def register(cls, concern: str, factory: Factory) -> None:
        """Make *factory(key, policy, store)* build this store's backends of *concern*."""
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
            factory = vars(klass).get("_factories", {}).get(concern)
            if factory is not None:
                return factory  # type: ignore[no-any-return]
        msg = f"{type(self).__name__} has no backend for {concern!r}"
        raise TypeError(msg)

    def _forget_backends(self) -> None:
        with self._lock:
            self._backends.clear()
