"""Stack and @resilient: the recommended order, one wrapper, and whole SDK classes."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from resilience import (
    Backoff,
    BoundedPolicy,
    CircuitBreakerPolicy,
    RateLimitPolicy,
    RetryPolicy,
    Stack,
    exempt,
    layers_of,
    resilient,
)
from resilience._decorating import ResilientFunction
from resilience._traced import TracedPolicy


FULL = Stack(
    traced=TracedPolicy(log=False),
    retry=RetryPolicy(attempts=3, backoff=Backoff(jitter="none")),
    circuit_breaker=CircuitBreakerPolicy(failure_threshold=5),
    rate_limited=RateLimitPolicy(rate=1000),
    bounded=BoundedPolicy(limit=10),
)


def echo(x: int) -> int:
    """Echo docs."""
    return x


class TestStack:
    def test_order_and_one_wrapper(self):
        """A full stack is one wrapper whose layers run in the recommended order."""
        decorated = FULL(echo)
        assert isinstance(decorated, ResilientFunction)
        assert echo is decorated.__wrapped__
        assert ["traced", "retry", "circuit_breaker", "rate_limited", "bounded"] == [
            layer.decorator for layer in layers_of(decorated)
        ]
        assert 5 == decorated(5)
        assert inspect.signature(echo) == inspect.signature(decorated)

    def test_partial_stack(self):
        """Layers set to None are left out."""
        decorated = Stack(retry=RetryPolicy(), bounded=BoundedPolicy(limit=2))(echo)
        assert ["retry", "bounded"] == [layer.decorator for layer in layers_of(decorated)]

    def test_from_dict(self):
        """A plain dict builds every policy, nested backoff included."""
        stack = Stack.from_dict(
            {
                "retry": {"attempts": 4, "backoff": {"base": 1}},
                "bounded": {"limit": 3},
                "rate_limited": {"rate": 5},
            }
        )
        assert RetryPolicy(attempts=4, backoff=Backoff(base=1)) == stack.retry
        assert BoundedPolicy(limit=3) == stack.bounded
        assert RateLimitPolicy(rate=5) == stack.rate_limited

    def test_bad_stacks(self):
        """Unknown layers, wrong types and empty stacks are refused with named errors."""
        with pytest.raises(ValueError, match="unknown Stack field.*: retyr"):
            Stack.from_dict({"retyr": {}})
        with pytest.raises(TypeError, match="Stack.retry must be a RetryPolicy"):
            Stack(retry=BoundedPolicy(limit=1))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="needs at least one of"):
            Stack()

    def test_retry_waits_out_an_open_breaker(self, clock):
        """An inner breaker's refusal tells the outer retry exactly how long to wait."""
        calls = []

        def flaky():
            calls.append(clock.monotonic())
            if len(calls) == 1:
                raise ConnectionError
            return "ok"

        stack = Stack(
            retry=RetryPolicy(attempts=3, backoff=Backoff(base=0.5, jitter="none")),
            circuit_breaker=CircuitBreakerPolicy(
                name="compose-test", failure_threshold=1, reset_timeout=5
            ),
        )
        assert "ok" == stack(flaky)()
        # attempt 2 met the open breaker (0.5 s in) and waited its 4.5 s to the probe
        assert [0.5, 4.5] == clock.sleeps
        assert [0.0, 5.0] == calls

    @pytest.mark.anyio
    async def test_async_stack(self, clock):
        """The same stack decorates coroutines."""

        @FULL
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        assert inspect.iscoroutinefunction(double)
        assert 8 == await double(4)


class Client:
    """An SDK-like class."""

    def get(self, path: str) -> str:
        return f"get {path}"

    async def aget(self, path: str) -> str:
        return f"aget {path}"

    @classmethod
    def build(cls) -> Client:
        return cls()

    @staticmethod
    def version() -> str:
        return "1"

    @property
    def name(self) -> str:
        return "client"

    def _private(self) -> str:
        return "private"

    @exempt
    def close(self) -> None:
        return None

    def upload(self, data: bytes) -> int:
        return len(data)


class TestResilientClass:
    def test_public_methods_decorated(self):
        """Every public method, sync or async, class or static, gets the stack."""

        @resilient({"retry": {"attempts": 2}})
        class Sdk(Client):
            pass

        for name in ("get", "aget", "build", "version", "upload"):
            assert 1 == len(layers_of(vars(Sdk)[name])), name
        assert "_private" not in vars(Sdk)
        assert "close" not in vars(Sdk)
        assert isinstance(vars(Sdk)["name"] if "name" in vars(Sdk) else Client.name, property)
        sdk = Sdk.build()
        assert ("get /x", "1", "client", 3) == (
            sdk.get("/x"),
            Sdk.version(),
            sdk.name,
            sdk.upload(b"abc"),
        )
        assert "aget /y" == asyncio.run(sdk.aget("/y"))
        assert inspect.signature(Client.get) == inspect.signature(Sdk.get)
        assert inspect.iscoroutinefunction(Sdk().aget)

    def test_exclude_and_overrides(self):
        """exclude skips methods; overrides give one method its own stack, or none."""

        @resilient(
            Stack(retry=RetryPolicy(attempts=2)),
            exclude=["version"],
            overrides={"upload": {"bounded": {"limit": 1}}, "aget": None},
        )
        class Sdk(Client):
            pass

        assert "version" not in vars(Sdk)
        assert "aget" not in vars(Sdk)
        assert ["bounded"] == [layer.decorator for layer in layers_of(vars(Sdk)["upload"])]
        assert ["retry"] == [layer.decorator for layer in layers_of(vars(Sdk)["get"])]

    def test_unknown_names_refused(self):
        """Naming a method the class does not have is an error, not a silent no-op."""
        with pytest.raises(ValueError, match="no method.*named uplod"):

            @resilient({"retry": {}}, exclude=["uplod"])
            class Sdk(Client):
                pass

    def test_not_a_class(self):
        """@resilient decorates classes only."""
        with pytest.raises(TypeError, match="decorates a class"):
            resilient({"retry": {}})(echo)  # type: ignore[type-var]


class Layered:
    """An SDK-shaped client: post and get call request, as Stainless clients do."""

    def __init__(self) -> None:
        self.sent = 0

    def request(self, path: str) -> str:
        self.sent += 1
        raise ConnectionError(path)

    def post(self, path: str) -> str:
        return self.request(path)

    async def arequest(self, path: str) -> str:
        self.sent += 1
        await asyncio.sleep(0)
        raise ConnectionError(path)

    async def apost(self, path: str) -> str:
        return await self.arequest(path)

    @classmethod
    def make(cls) -> str:
        return cls.build()

    @classmethod
    def build(cls) -> str:
        raise ConnectionError("build")

    def close(self) -> None:
        raise ConnectionError("close")

    def copy(self) -> Layered:
        self.sent += 1
        return self


ATTEMPTS_3 = {"retry": {"attempts": 3, "on": ConnectionError, "backoff": {"base": 0}}}


class TestOneLayerPerCall:
    def test_nested_sync_calls_do_not_multiply(self):
        """post calls request: three attempts send three requests, not nine."""
        sdk = resilient(ATTEMPTS_3)(type("Sdk", (Layered,), {}))()
        with pytest.raises(ConnectionError):
            sdk.post("/x")
        assert 3 == sdk.sent
        with pytest.raises(ConnectionError):
            sdk.request("/y")  # called directly, request gets its own stack
        assert 6 == sdk.sent

    async def _two_tasks(self, sdk):
        return await asyncio.gather(sdk.apost("/a"), sdk.apost("/b"), return_exceptions=True)

    def test_nested_async_calls_do_not_multiply(self):
        """The same for coroutines, concurrent calls on one object included."""
        sdk = resilient(ATTEMPTS_3)(type("Sdk", (Layered,), {}))()
        outcomes = asyncio.run(self._two_tasks(sdk))
        assert [ConnectionError, ConnectionError] == [type(o) for o in outcomes]
        assert 6 == sdk.sent

    def test_other_objects_keep_their_own_stack(self):
        """Only calls on the same object run bare: another client retries on its own."""
        cls = resilient(ATTEMPTS_3)(type("Sdk", (Layered,), {}))
        inner = cls()

        class Outer(cls):  # type: ignore[misc, valid-type]
            def post(self, path: str) -> str:
                self.sent += 1
                with pytest.raises(ConnectionError):
                    inner.request(path)
                raise ConnectionError(path)

        outer = resilient(ATTEMPTS_3)(Outer)()
        with pytest.raises(ConnectionError):
            outer.post("/z")
        assert (3, 9) == (outer.sent, inner.sent)

    def test_classmethods_nest_once(self):
        """A classmethod calling another decorated classmethod is one logical call too."""
        calls = []
        cls = type("Sdk", (Layered,), {"build": classmethod(lambda c: calls.append(1) or 1 / 0)})
        cls = resilient(
            {"retry": {"attempts": 2, "on": ZeroDivisionError, "backoff": {"base": 0}}}
        )(cls)
        with pytest.raises(ZeroDivisionError):
            cls.make()
        assert 2 == len(calls)

    def test_lifecycle_methods_left_alone(self):
        """close and copy are not decorated by default; lifecycle=() decorates them."""
        cls = resilient(ATTEMPTS_3)(type("Sdk", (Layered,), {}))
        assert "close" not in vars(cls)
        assert "copy" not in vars(cls)
        every = resilient(ATTEMPTS_3, lifecycle=())(type("Every", (Layered,), {}))
        assert 1 == len(layers_of(vars(every)["close"]))

    def test_signature_and_coroutine_kept(self):
        """The guard keeps the method's signature and its coroutine-ness."""
        cls = resilient(ATTEMPTS_3)(type("Sdk", (Layered,), {}))
        assert inspect.signature(Layered.post) == inspect.signature(cls.post)
        assert inspect.iscoroutinefunction(cls.apost)
        assert ["retry"] == [layer.decorator for layer in layers_of(vars(cls)["post"])]
