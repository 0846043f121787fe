"""
Composition: the whole stack of our decorators in one object, and a class decorator.

The recommended order, outermost first, is the one ``Stack`` applies::

    traced -> hedged -> retry -> circuit_breaker -> rate_limited -> bounded -> your call

- ``traced`` outermost: one span covers the logical call, all its attempts and waits
  (each hedged attempt is a child span of it).
- ``hedged`` outside ``retry`` (as Polly orders its hedging strategy outside the rest): a
  hedge is a whole second try of the retried call, and it goes through the breaker, the
  rate limit and the pool like any call, so hedges are counted and refused honestly. A
  retry outside the hedge would instead re-run the whole race on each failure.
- ``retry`` outside the breaker: each attempt asks the breaker, and a refusal
  (``CircuitOpenError``) tells the retry exactly how long to wait (its ``retry_after``).
- ``circuit_breaker`` outside the limits: a call the breaker refuses takes no rate token and
  no permit, and the breaker counts the outcomes of real calls only.
- ``rate_limited`` then ``bounded`` innermost: each attempt takes a rate token and a permit
  only while it really calls, and gives the permit back before the retry's wait (as
  resilience4j orders its aspects: Retry(CircuitBreaker(RateLimiter(Bulkhead(call))))).

Because our decorators join one pipeline, a full stack still costs one wrapper.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from resilience._dictable import FromDict
from resilience._hedge.policy import HedgingPolicy
from resilience._policies import BoundedPolicy, CircuitBreakerPolicy, RateLimitPolicy, RetryPolicy
from resilience._traced import TracedPolicy


__all__ = ["LIFECYCLE", "ORDER", "Stack", "exempt", "resilient"]

C = TypeVar("C", bound=type)
F = TypeVar("F")

ORDER = ("traced", "hedged", "retry", "circuit_breaker", "rate_limited", "bounded")
"""The stack's layers, outermost first."""

_POLICY_TYPES: dict[str, type[FromDict]] = {
    "traced": TracedPolicy,
    "hedged": HedgingPolicy,
    "retry": RetryPolicy,
    "circuit_breaker": CircuitBreakerPolicy,
    "rate_limited": RateLimitPolicy,
    "bounded": BoundedPolicy,
}


@dataclass(frozen=True, slots=True)
class Stack(FromDict):
    """
    A whole resilience stack: any of the five policies, applied in the recommended order.

    A layer set to None is left out. Build it from policies, or from a plain dict with
    ``Stack.from_dict({"retry": {"attempts": 3}, "bounded": {"limit": 10}})``; call it to
    decorate (``@stack``) a function, method, classmethod or staticmethod.

    Args:
        traced: Tracing (outermost).
        hedged: Hedging (async callables only; ``@resilient`` leaves it off sync methods).
        retry: Retrying; its default delay hook waits out an inner breaker's or limiter's
            ``retry_after``.
        circuit_breaker: The breaker.
        rate_limited: The rate budget.
        bounded: The concurrency limit (innermost).

    .. versionadded:: 0.1.0
    """

    traced: TracedPolicy | None = None
    hedged: HedgingPolicy | None = None
    retry: RetryPolicy | None = None
    circuit_breaker: CircuitBreakerPolicy | None = None
    rate_limited: RateLimitPolicy | None = None
    bounded: BoundedPolicy | None = None

    def __post_init__(self) -> None:
        for name, policy_type in _POLICY_TYPES.items():
            value = getattr(self, name)
            if value is not None and not isinstance(value, policy_type):
                msg = (
                    f"Stack.{name} must be a {policy_type.__name__} (or a mapping in "
                    f"Stack.from_dict), got {type(value).__name__}"
                )
                raise TypeError(msg)
        if all(getattr(self, name) is None for name in ORDER):
            msg = f"a Stack needs at least one of {', '.join(ORDER)}"
            raise ValueError(msg)

    def decorators(self) -> list[Callable[[Any], Any]]:
        """Return the decorators of the stack, outermost first."""
        from resilience import (  # noqa: PLC0415 - the package imports this module
            bounded,
            circuit_breaker,
            hedged,
            rate_limited,
            retry,
            traced,
        )

        makers: dict[str, Callable[[Any], Any]] = {
            "traced": traced,
            "hedged": hedged,
            "retry": retry,
            "circuit_breaker": circuit_breaker,
            "rate_limited": rate_limited,
            "bounded": bounded,
        }
        found = []
        for name in ORDER:
            policy = getattr(self, name)
            if policy is None:
                continue
            found.append(makers[name](policy))
        return found

    @overload
    def __call__(self, target: classmethod[Any, Any, Any]) -> classmethod[Any, Any, Any]: ...
    @overload
    def __call__(self, target: staticmethod[Any, Any]) -> staticmethod[Any, Any]: ...
    @overload
    def __call__(self, target: F) -> F: ...
    def __call__(self, target: Any) -> Any:
        """Decorate *target* with the whole stack (one wrapper, every layer)."""
        decorated = target
        for decorator in reversed(self.decorators()):
            decorated = decorator(decorated)
        return decorated


Stack._nested = dict(_POLICY_TYPES)


_EXEMPT = "__resilience_exempt__"


def exempt(func: F) -> F:
    """
    Mark a method so that ``@resilient`` leaves it alone.

    .. versionadded:: 0.1.0
    """
    target = func.__func__ if isinstance(func, classmethod | staticmethod) else func
    setattr(target, _EXEMPT, True)
    return func


LIFECYCLE = frozenset(
    {
        "close",
        "aclose",
        "copy",
        "with_options",
        "with_middleware",
        "with_raw_response",
        "with_streaming_response",
        "is_closed",
    }
)
"""Methods ``@resilient`` leaves alone by default: they open, close or copy the client."""

_INSIDE: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "resilience_resilient_inside", default=frozenset()
)
"""The ids of the objects (or classes) with a ``@resilient`` method running in this context."""


def resilient(
    stack: Stack | Mapping[str, Any],
    /,
    *,
    exclude: Iterable[str] = (),
    overrides: Mapping[str, Stack | Mapping[str, Any] | None] | None = None,
    lifecycle: Iterable[str] = LIFECYCLE,
) -> Callable[[C], C]:
    """
    Class decorator: apply *stack* to every public method of a class (an SDK client, say).

    Sync and async methods, classmethods and staticmethods are decorated, keeping their
    signatures; inherited public methods are decorated on the class itself. Properties,
    nested classes, names starting with ``_`` and the *lifecycle* methods (``close``,
    ``copy``, ``with_options``...) are left alone. A stack's ``hedged`` layer applies to
    the async methods only (a sync call cannot be cancelled).

    One logical call gets one layer of each decorator: when a decorated method calls another
    decorated method on the same object (an SDK's ``post`` calls its ``request``), the
    inner call runs undecorated, so three attempts stay three requests. The outermost
    method's stack wins.

    Args:
        stack: A ``Stack`` or the mapping ``Stack.from_dict`` takes.
        exclude: Method names to leave undecorated (``@exempt`` on a method does the same).
        overrides: Per-method stacks; None for a method leaves it undecorated.
        lifecycle: Names left undecorated unless named in *overrides*
            (default ``LIFECYCLE``; pass ``()`` to decorate them too).

    .. versionadded:: 0.1.0
    """
    default = _as_stack(stack)
    skip = set(exclude)
    special = {
        name: None if value is None else _as_stack(value)
        for name, value in (overrides or {}).items()
    }
    skip |= set(lifecycle) - set(special)

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            msg = f"@resilient decorates a class, got {type(cls).__name__}"
            raise TypeError(msg)
        unknown = sorted((set(special) | set(exclude)) - set(dir(cls)))
        if unknown:
            msg = f"@resilient on {cls.__qualname__}: no method(s) named {', '.join(unknown)}"
            raise ValueError(msg)
        for name in dir(cls):
            if name.startswith("_") or name in skip:
                continue
            raw = _raw_attribute(cls, name)
            if not _is_method(raw):
                continue
            chosen = special.get(name, default)
            if chosen is not None and chosen.hedged is not None and not _is_async(raw):
                chosen = _without_hedging(chosen)  # a sync method cannot be hedged
            if chosen is None:
                continue
            setattr(cls, name, _once_per_call(raw, chosen))
        return cls

    return decorate


def _once_per_call(raw: Any, stack: Stack) -> Any:
    """
    *raw* decorated with *stack*, running bare when its object is already in a decorated call.

    Staticmethods (no object) and generator methods (whose body runs after the call
    returned) are decorated without the guard.
    """
    if isinstance(raw, staticmethod):
        return stack(raw)
    function = raw.__func__ if isinstance(raw, classmethod) else raw
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        return stack(raw)
    decorated = stack(function)
    guarded: Callable[..., Any]
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def guarded_async(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
            inside = _INSIDE.get()
            if id(owner) in inside:
                return await function(owner, *args, **kwargs)
            token = _INSIDE.set(inside | {id(owner)})
            try:
                return await decorated(owner, *args, **kwargs)
            finally:
                _INSIDE.reset(token)

        guarded = guarded_async
    else:

        @functools.wraps(function)
        def guarded_sync(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
            inside = _INSIDE.get()
            if id(owner) in inside:
                return function(owner, *args, **kwargs)
            token = _INSIDE.set(inside | {id(owner)})
            try:
                return decorated(owner, *args, **kwargs)
            finally:
                _INSIDE.reset(token)

        guarded = guarded_sync
    # layers_of() finds the stack's layers behind the guard, as behind a bound method
    setattr(guarded, "_self_parent", decorated)  # noqa: B010 - a function attribute mypy cannot see
    return classmethod(guarded) if isinstance(raw, classmethod) else guarded


def _as_stack(value: Stack | Mapping[str, Any]) -> Stack:
    if isinstance(value, Stack):
        return value
    if isinstance(value, Mapping):
        return Stack.from_dict(value)
    msg = f"expected a Stack or a mapping of its policies, got {type(value).__name__}"
    raise TypeError(msg)


def _is_async(raw: object) -> bool:
    target = raw.__func__ if isinstance(raw, classmethod | staticmethod) else raw
    return inspect.iscoroutinefunction(target)


def _without_hedging(stack: Stack) -> Stack | None:
    if all(getattr(stack, name) is None for name in ORDER if name != "hedged"):
        return None
    return dataclasses.replace(stack, hedged=None)


def _raw_attribute(cls: type, name: str) -> object:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None  # pragma: no cover - dir() only lists what the MRO holds


def _is_method(raw: object) -> bool:
    target = raw.__func__ if isinstance(raw, classmethod | staticmethod) else raw
    if getattr(target, _EXEMPT, False):
        return False
    return inspect.isfunction(target) or inspect.isfunction(getattr(target, "__wrapped__", None))
