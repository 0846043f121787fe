"""
Which backend a breaker's name gets, and the handle ``get_circuit_breaker(name)`` returns.

Each store class registers its factory for the ``"breaker"`` concern itself (``MemoryBreaker``
for ``MemoryStore``; ``RedisBreaker``, imported on first use, for ``RedisStore``), so every
decorator naming a breaker on a store shares one backend. ``declared`` keeps the live
decorators per store and name, so a name still resolves after ``testing.reset()`` cleared
the store, and ``retire_orphans`` sends the decorators holding a dropped backend to fetch a
new one. ``announce`` emits the state-change event for the handle and the decorator alike.
"""

from __future__ import annotations

import weakref

from typing import TYPE_CHECKING, Any

from resilience import _config
from resilience._breaker.contract import BreakerBackend, BreakerConfig, CircuitBreakerStats
from resilience._breaker.memory import live
from resilience.stores._memory import DEFAULT_STORE
from resilience.stores._registry import on_sweep
from resilience.telemetry._bus import BUS, emit


if TYPE_CHECKING:
    from resilience._breaker.contract import Transition
    from resilience._breaker.layer import BreakerLayer
    from resilience._policies import CircuitBreakerPolicy


__all__ = [
    "CircuitBreaker",
    "announce",
    "backend_for",
    "declared",
    "get_circuit_breaker",
    "retire_orphans",
]

# -- the registry -----------------------------------------------------------------------------

# The live layers per store and name, so get_circuit_breaker(name) works after
# testing.reset() cleared the store while the decorated functions still exist.
declared: weakref.WeakKeyDictionary[Any, dict[str, weakref.WeakSet[BreakerLayer]]] = (
    weakref.WeakKeyDictionary()
)


def _prune_declared(store: Any) -> None:
    """After a sweep: forget names whose decorators are all gone (an empty set each)."""
    names = declared.get(store)
    if names:
        for name in [name for name, layers in names.items() if not layers]:
            names.pop(name, None)


on_sweep(_prune_declared)


def _declared_policy(store: Any, name: str) -> CircuitBreakerPolicy | None:
    for layer in list(declared.get(store, {}).get(name, ())):
        return layer.policy
    return None


def _declared_names(store: Any) -> set[str]:
    return {name for name, layers in declared.get(store, {}).items() if layers}


def backend_for(store: Any, name: str, policy: CircuitBreakerPolicy) -> BreakerBackend:
    """Return the shared backend for *name*, refusing a second, different declaration."""
    backend: BreakerBackend = store.backend("breaker", name, policy)
    wanted = BreakerConfig.of(policy)
    if backend.config != wanted:
        msg = (
            f"circuit breaker {name!r} is already declared with {backend.config}; breakers "
            f"sharing a name share one state, so they must agree (got {wanted})"
        )
        raise ValueError(msg)
    return backend


def retire_orphans() -> None:
    """After a store was cleared, make the decorators holding its breakers fetch new ones."""
    for backend in list(live):
        store = backend.store
        peek = getattr(store, "peek", None)
        if peek is not None and peek("breaker", backend.name) is not backend:
            backend.retire()


# Registered after MemoryStore's own clearer (imported above), so it runs after it.
_config.on_reset(retire_orphans)


def announce(transition: Transition) -> None:
    """Emit ``resilience.breaker.state_change`` for *transition*, if anyone listens."""
    if BUS.subs:
        emit(
            "resilience.breaker.state_change",
            {
                "consecutive_failures": transition.consecutive_failures,
                "window_calls": transition.window_calls,
                "window_failures": transition.window_failures,
            },
            {
                "name": transition.name,
                "from": transition.from_state,
                "to": transition.to_state,
                "reason": transition.reason,
            },
        )


class CircuitBreaker:
    """
    A handle on one named breaker's shared state, from ``get_circuit_breaker(name)``.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("name", "store")

    def __init__(self, name: str, store: Any = None) -> None:
        self.name = name
        self.store = DEFAULT_STORE if store is None else store

    def _backend(self) -> BreakerBackend:
        found: BreakerBackend | None = self.store.peek("breaker", self.name)
        if found is None:
            policy = _declared_policy(self.store, self.name)
            if policy is None:
                raise _unknown(self.name, self.store)
            found = backend_for(self.store, self.name, policy)
        return found

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (as soon as ``reset_timeout`` passed)."""
        return self._backend().state()

    @property
    def stats(self) -> CircuitBreakerStats:
        """A snapshot of the state and the counts."""
        return self._backend().stats()

    def reset(self) -> None:
        """Close the breaker and clear its counts, for every function that shares it."""
        transition = self._backend().reset()
        if transition is not None:
            announce(transition)

    def __repr__(self) -> str:
        try:
            state = self.state
        except KeyError:
            state = "unknown"
        return f"<CircuitBreaker {self.name!r} {state}>"


def _unknown(name: str, store: Any) -> KeyError:
    known = sorted({*store.keys("breaker"), *_declared_names(store)})
    return KeyError(
        f"no circuit breaker named {name!r} in {store!r}; known: {', '.join(known) or 'none'}"
    )


def get_circuit_breaker(name: str, *, store: Any = None) -> CircuitBreaker:
    """
    Return the breaker that every ``@circuit_breaker(name=name)`` shares.

    Args:
        name: The breaker's name (a decorated callable's qualified name if none was given).
        store: The store it lives in (default: this process's memory).

    Raises:
        KeyError: If no decorator declared a breaker of that name in that store.

    .. versionadded:: 0.1.0
    """
    where = DEFAULT_STORE if store is None else store
    if where.peek("breaker", name) is None and _declared_policy(where, name) is None:
        raise _unknown(name, where)
    return CircuitBreaker(name, where)
