"""
The one place that uses wrapt: turning a policy into a decorator for any kind of callable.

A decorator contributes a *layer*. Applying our decorator to a plain callable wraps it once;
applying it to a callable that one of ours already wraps does not wrap again: the new layer
joins the existing pipeline (outermost first) around the same original function, so a stack
of five decorators costs one wrapper, not five. ``classmethod`` and ``staticmethod`` objects
are looked through and rebuilt, so our decorators go above or below them.

Whether the target is sync, async, a generator or an async generator is decided once, here,
at decoration time; each layer then builds a runner for that kind. A runner has wrapt's
signature ``(wrapped, instance, args, kwargs)`` and calls the next runner the same way; the
innermost one calls the original.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

import wrapt

from resilience._dictable import FromDict


if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = [
    "Decorator",
    "Kind",
    "KeyedLayer",
    "Layer",
    "Passage",
    "Runner",
    "apply",
    "apump",
    "is_target",
    "layers_of",
    "policy_from",
    "pump",
    "terminal",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
PolicyT = TypeVar("PolicyT")

Kind = Literal["sync", "async", "gen", "asyncgen"]
Runner = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def terminal(
    wrapped: Callable[..., Any], instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The innermost runner: call the original (for async kinds this returns the awaitable)."""
    return wrapped(*args, **kwargs)


class Layer:
    """
    One decorator's share of a pipeline; made once per decorated callable.

    Subclasses set ``decorator`` (for messages), implement the runner builders for the kinds
    they support, and may override ``bind`` to validate the target or name state.
    """

    decorator = "decorator"
    __slots__ = ("name", "policy")

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = ""

    def bind(self, kind: Kind, qualname: str) -> None:
        """Validate against the target's *kind* and take its *qualname* as a default name."""
        self.name = qualname

    def build(self, kind: Kind, call_next: Runner) -> Runner:
        """Return this layer's runner for *kind* around *call_next*."""
        builder = getattr(self, f"build_{kind}")
        runner: Runner = builder(call_next)
        return runner

    def build_sync(self, call_next: Runner) -> Runner:
        """Runner for plain callables."""
        raise self._unsupported("functions")

    def build_async(self, call_next: Runner) -> Runner:
        """Runner for coroutine functions."""
        raise self._unsupported("async functions")

    def build_gen(self, call_next: Runner) -> Runner:
        """Runner for generator functions."""
        raise self._unsupported("generator functions")

    def build_asyncgen(self, call_next: Runner) -> Runner:
        """Runner for async generator functions."""
        raise self._unsupported("async generator functions")

    def _unsupported(self, what: str) -> TypeError:
        return TypeError(f"@{self.decorator} does not support {what} (decorating {self.name})")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.policy!r}>"


class KeyedLayer(Layer):
    """
    A layer whose state lives in a store under a key: the policy's, or the callable's name.

    Subclasses implement ``_refresh`` (fetch and check the key's backend); generator
    functions are refused, since a permit or a start would span the consumer's pauses.
    """

    __slots__ = ("key",)

    def __init__(self, policy: Any) -> None:
        super().__init__(policy)
        self.key = ""

    def bind(self, kind: Kind, qualname: str) -> None:
        """Take the key and refuse generators, then fetch the key's backend."""
        self.name = qualname
        self.key = self.policy.key or qualname
        if kind in ("gen", "asyncgen"):
            msg = (
                f"@{self.decorator} does not support generator functions ({qualname}): "
                f"decorate the function that consumes them instead"
            )
            raise TypeError(msg)
        self._refresh()

    def _refresh(self) -> object:
        """Fetch (and check) the key's backend."""
        raise NotImplementedError


class ResilientFunction(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """Our single wrapper type: the original callable plus the pipeline's layers."""

    def __init__(
        self, wrapped: Callable[..., Any], runner: Runner, layers: tuple[Layer, ...], kind: Kind
    ) -> None:
        super().__init__(wrapped, runner)
        self._self_layers = layers
        self._self_kind = kind

    def __reduce_ex__(self, protocol: Any) -> Any:
        msg = "decorated functions are pickled by reference: decorate at module level"
        raise TypeError(msg)


# wrapt's base wrapper type (its C extension's, or the pure-Python one), whose ``__init__``
# takes the binding explicitly.
_WrapperBase: Any = wrapt.FunctionWrapper.__bases__[0]


class _UnboundResilientFunction(ResilientFunction):
    """
    The wrapper for targets with nothing bound (plain functions, the most common case).

    For the bindings ``"function"`` and ``"callable"``, wrapt's call looks up
    ``wrapped.__self__`` on every call to find an instance; on a plain function that lookup
    fails, and building and discarding the ``AttributeError`` costs several hundred
    nanoseconds per call. A plain function has no instance, so this wrapper is made with a
    binding of its own (``"unbound"``): wrapt's C call then goes straight to the pipeline,
    and attribute access through a class still binds (only ``"builtin"`` and ``"class"``
    skip binding). Through a class, ``Class.method(obj)`` reaches the runners with
    ``instance=None`` and *obj* first in *args*, which is all they pass on.
    """

    def __init__(
        self, wrapped: Callable[..., Any], runner: Runner, layers: tuple[Layer, ...], kind: Kind
    ) -> None:
        _WrapperBase.__init__(self, wrapped, None, runner, None, "unbound", None)
        self._self_layers = layers
        self._self_kind = kind


def _kind_of(target: Callable[..., Any]) -> Kind:
    if inspect.isasyncgenfunction(target):
        return "asyncgen"
    if inspect.iscoroutinefunction(target):
        return "async"
    if inspect.isgeneratorfunction(target):
        return "gen"
    call = getattr(type(target), "__call__", None)  # noqa: B004 - the class's method, not callable()
    if not inspect.isfunction(target) and call is not None:
        if inspect.isasyncgenfunction(call):
            return "asyncgen"
        if inspect.iscoroutinefunction(call):
            return "async"
        if inspect.isgeneratorfunction(call):
            return "gen"
    return "sync"


def _qualname(target: object) -> str:
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if name is None:
        name = type(target).__qualname__
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def apply(layer: Layer, target: Any) -> Any:
    """Wrap *target* with *layer*, joining an existing pipeline of ours if there is one."""
    if isinstance(target, classmethod | staticmethod):
        return type(target)(apply(layer, target.__func__))
    if isinstance(target, ResilientFunction):
        original = target.__wrapped__
        layers = (layer, *target._self_layers)
        kind: Kind = target._self_kind  # pyright: ignore[reportAssignmentType]
    else:
        if not callable(target):
            msg = (
                f"@{layer.decorator} decorates a callable, a classmethod or a staticmethod, "
                f"got {type(target).__name__} {target!r}"
            )
            raise TypeError(msg)
        original = target
        layers = (layer,)
        kind = _kind_of(target)
    layer.bind(kind, _qualname(original))
    runner: Runner = terminal
    for each in reversed(layers):
        runner = each.build(kind, runner)
    unbound = inspect.isfunction(original) or isinstance(original, functools.partial)
    wrapper_type = _UnboundResilientFunction if unbound else ResilientFunction
    return wrapper_type(original, runner, layers, kind)


def is_target(obj: object) -> bool:
    """Whether *obj* is something to decorate (so a decorator was used bare, without a policy)."""
    if isinstance(obj, FromDict):  # a Backoff is callable (tenacity's wait=) but is no target
        return False
    return callable(obj) or isinstance(obj, classmethod | staticmethod)


def layers_of(func: object) -> tuple[Layer, ...]:
    """Return the layers our decorators put on *func*, outermost first (empty if none)."""
    if isinstance(func, classmethod | staticmethod):
        func = func.__func__
    if isinstance(func, ResilientFunction):
        layers: tuple[Layer, ...] = func._self_layers
        return layers
    parent = getattr(func, "_self_parent", None)
    if isinstance(parent, ResilientFunction):
        return layers_of(parent)
    return ()


def policy_from(
    policy_cls: type[PolicyT], decorator: str, policy: object, fields: Mapping[str, Any]
) -> PolicyT:
    """Return the policy given positionally, or one built (or amended) from keyword fields."""
    if policy is None:
        return policy_cls(**fields)
    if isinstance(policy, policy_cls):
        return dataclasses.replace(policy, **fields) if fields else policy  # type: ignore[type-var]
    msg = (
        f"@{decorator} takes a {policy_cls.__name__} as its only positional argument, "
        f"or keyword arguments; got {type(policy).__name__} {policy!r}"
    )
    raise TypeError(msg)


class Decorator(Generic[PolicyT]):
    """
    What ``@retry(...)`` and its siblings return: applies a fresh layer to each target.

    Works on functions, async functions, generator functions, methods, ``classmethod`` and
    ``staticmethod`` objects, keeping the signature, ``__wrapped__`` and typing.
    """

    __slots__ = ("_make_layer", "policy")

    def __init__(self, policy: PolicyT, make_layer: Callable[[PolicyT], Layer]) -> None:
        self.policy = policy
        self._make_layer = make_layer

    @overload
    def __call__(self, target: classmethod[T, P, R]) -> classmethod[T, P, R]: ...
    @overload
    def __call__(self, target: staticmethod[P, R]) -> staticmethod[P, R]: ...
    @overload
    def __call__(self, target: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, target: Any) -> Any:
        """Decorate *target*."""
        return apply(self._make_layer(self.policy), target)

    def __repr__(self) -> str:
        return f"<decorator {self.policy!r}>"


class Passage:
    """
    One generator's way through a layer, told by ``pump``/``apump`` (here: nothing to do).

    ``pause`` runs before each item goes to the consumer and ``resume`` when the consumer is
    back (a send, a throw or a close); ``ended`` runs once, when the generator has finished
    (None, also when the consumer closed it) or raised; ``aended`` is its async form.
    """

    __slots__ = ()

    def pause(self) -> None:
        """The consumer's code runs until ``resume``."""

    def resume(self) -> None:
        """The generator's code runs again."""

    def ended(self, exc: BaseException | None) -> None:
        """The generator finished (*exc* None) or raised *exc*."""

    async def aended(self, exc: BaseException | None) -> None:
        """``ended`` for async generators."""
        self.ended(exc)


def pump(
    start: Callable[[], Passage],
    call_next: Runner,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, Any]:
    """
    Run the next runner's generator under the passage *start()* opens on the first item.

    Every send, throw and close passes through, as ``yield from`` would, with the passage
    told of each turn; its end (a close's too, and the close's own error) goes to ``ended``.
    """
    passage = start()
    try:
        gen = call_next(wrapped, instance, args, kwargs)
        step: Callable[[Any], Any] = gen.send
        argument: Any = None
        while True:
            try:
                item = step(argument)
            except StopIteration as stop:
                result = stop.value
                break
            passage.pause()
            try:
                argument = yield item
            except GeneratorExit:
                passage.resume()
                gen.close()
                raise
            except BaseException as thrown:  # forwarded into the generator
                step, argument = gen.throw, thrown
            else:
                step = gen.send
            passage.resume()
    except GeneratorExit:
        passage.ended(None)
        raise
    except BaseException as exc:
        passage.ended(exc)
        raise
    passage.ended(None)
    return result


async def apump(
    start: Callable[[], Awaitable[Passage]],
    call_next: Runner,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncGenerator[Any, Any]:
    """``pump`` for async generators (which cannot ``yield from``): forwards by hand."""
    passage = await start()
    try:
        agen = call_next(wrapped, instance, args, kwargs)
        step: Callable[[Any], Awaitable[Any]] = agen.asend
        argument: Any = None
        while True:
            try:
                item = await step(argument)
            except StopAsyncIteration:
                break
            passage.pause()
            try:
                argument = yield item
            except GeneratorExit:
                passage.resume()
                await agen.aclose()
                raise
            except BaseException as thrown:  # forwarded into the generator
                step, argument = agen.athrow, thrown
            else:
                step = agen.asend
            passage.resume()
    except GeneratorExit:
        await passage.aended(None)
        raise
    except BaseException as exc:
        await passage.aended(exc)
        raise
    await passage.aended(None)
