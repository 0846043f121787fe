"""The wrapping layer: every kind of callable keeps its identity, and stacking joins one pipeline."""

from __future__ import annotations

import asyncio
import functools
import inspect

import pytest

from resilience import RetryPolicy, layers_of, retry
from resilience._decorating import ResilientFunction


def plain(a: int, b: str = "x", *, c: float = 1.0) -> str:
    """Plain docs."""
    return f"{a}{b}{c}"


async def coro(a: int, b: str = "x") -> str:
    """Coro docs."""
    return f"{a}{b}"


def gen(n: int):
    """Gen docs."""
    yield from range(n)


async def agen(n: int):
    """Agen docs."""
    for i in range(n):
        yield i


class Service:
    def method(self, a: int) -> tuple[object, int]:
        """Method docs."""
        return (self, a)

    @classmethod
    def klass(cls, a: int) -> tuple[object, int]:
        return (cls, a)

    @staticmethod
    def static(a: int) -> int:
        return a

    async def amethod(self, a: int) -> int:
        return a


@pytest.fixture(
    name="target",
    params=[plain, coro, gen, agen],
    ids=["function", "async", "generator", "async-generator"],
)
def _target(request):
    return request.param


class TestIdentity:
    def test_metadata_preserved(self, target):
        """signature, __name__, __doc__, __wrapped__ and the kind checks are the original's."""
        wrapped = retry(target)
        assert inspect.signature(target) == inspect.signature(wrapped)
        assert target.__name__ == wrapped.__name__
        assert target.__doc__ == wrapped.__doc__
        assert target is wrapped.__wrapped__
        assert inspect.iscoroutinefunction(target) == inspect.iscoroutinefunction(wrapped)
        assert inspect.isgeneratorfunction(target) == inspect.isgeneratorfunction(wrapped)
        assert inspect.isasyncgenfunction(target) == inspect.isasyncgenfunction(wrapped)
        assert target is inspect.unwrap(wrapped)

    def test_results_unchanged(self):
        """Every kind returns what the original returns."""
        assert "1y2.0" == retry(plain)(1, "y", c=2.0)
        assert "2x" == asyncio.run(retry(coro)(2))
        assert [0, 1, 2] == list(retry(gen)(3))

        async def collect():
            return [i async for i in retry(agen)(2)]

        assert [0, 1] == asyncio.run(collect())

    def test_keyword_and_positional_arguments_pass_through(self):
        """Arguments reach the original unchanged."""
        seen = []

        @retry
        def f(*args, **kwargs):
            seen.append((args, kwargs))

        f(1, 2, x=3)
        assert [((1, 2), {"x": 3})] == seen


class TestMethods:
    @pytest.mark.parametrize("above", [True, False], ids=["above", "below"])
    def test_classmethod_and_staticmethod(self, above):
        """Our decorators go above or below @classmethod and @staticmethod."""
        if above:

            class C:
                @retry
                @classmethod
                def k(cls, a):
                    return (cls, a)

                @retry
                @staticmethod
                def s(a):
                    return a

        else:

            class C:  # type: ignore[no-redef]
                @classmethod
                @retry
                def k(cls, a):
                    return (cls, a)

                @staticmethod
                @retry
                def s(a):
                    return a

        assert (C, 1) == C.k(1)
        assert (C, 2) == C().k(2)
        assert 3 == C.s(3)
        assert 4 == C().s(4)

    def test_instance_method(self):
        """self is bound as usual, on every access."""
        svc = Service()
        m = retry(Service.method)
        assert (svc, 5) == m(svc, 5)

        class S(Service):
            method = retry(Service.method)

        s = S()
        assert (s, 1) == s.method(1)
        assert inspect.signature(Service().method) == inspect.signature(s.method)

    def test_async_method_is_coroutine_function(self):
        """A decorated async method still looks like one when bound."""

        class S:
            @retry
            async def go(self, a):
                return a

        assert inspect.iscoroutinefunction(S().go)
        assert 7 == asyncio.run(S().go(7))

    def test_bound_method_and_partial(self):
        """Bound methods and partials can be decorated directly."""
        svc = Service()
        assert (svc, 1) == retry(svc.method)(1)
        assert "1zz1.0" == retry(functools.partial(plain, b="zz"))(1)

    def test_async_callable_object(self):
        """An object with an async __call__ is treated as async."""

        class Job:
            async def __call__(self, x):
                return x * 2

        wrapped = retry(Job())
        assert 8 == asyncio.run(wrapped(4))


class TestStacking:
    def test_stacking_joins_one_wrapper(self):
        """A decorator of ours over another joins its pipeline: one wrapper, two layers."""
        inner = retry(attempts=2)(plain)
        outer = retry(attempts=5)(inner)
        assert isinstance(outer, ResilientFunction)
        assert plain is outer.__wrapped__
        assert [5, 2] == [layer.policy.attempts for layer in layers_of(outer)]
        assert [2] == [layer.policy.attempts for layer in layers_of(inner)]

    def test_stacked_layers_both_act(self):
        """Joined layers still nest: the outer retry repeats the inner one."""
        calls = []

        @retry(attempts=3, backoff=RetryPolicy().backoff.__class__(base=0))
        @retry(attempts=2, backoff=RetryPolicy().backoff.__class__(base=0))
        def always():
            calls.append(1)
            raise ValueError

        with pytest.raises(ValueError):
            always()
        assert 6 == len(calls)

    def test_layers_of_plain_function(self):
        """An undecorated function has no layers."""
        assert () == layers_of(plain)

    def test_layers_through_classmethod(self):
        """layers_of looks through classmethod objects."""
        cm = retry(classmethod(plain))
        assert 1 == len(layers_of(cm))


class TestErrors:
    def test_not_callable(self):
        """Decorating a non-callable is a TypeError naming the decorator."""
        with pytest.raises(TypeError, match="@retry decorates a callable"):
            retry()(42)  # type: ignore[call-overload]

    def test_wrong_policy_type(self):
        """A policy of the wrong class is named in the error."""
        with pytest.raises(TypeError, match="@retry takes a RetryPolicy"):
            retry("fast")  # type: ignore[call-overload]

    def test_policy_plus_fields_amends(self):
        """Keyword fields amend a given policy."""
        deco = retry(RetryPolicy(attempts=3), timeout=5)
        assert RetryPolicy(attempts=3, timeout=5) == deco.policy

    def test_decorated_functions_do_not_pickle_by_value(self):
        """Pickling a wrapper explains that it goes by reference."""
        import pickle

        with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
            pickle.dumps(retry(lambda: 1))
