"""
Contract v2: control flow is never retried.

``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` pass
through ``@retry`` untouched, for every kind of callable: never retried, never handed to an
``on=`` predicate, a fallback or a delay hook, even with ``on=BaseException`` or a predicate
that says yes to everything.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from resilience import Backoff, retry
from resilience._errors import CONTROL_FLOW as _CONTROL_FLOW
from resilience.testing import FakeClock


CONTROL_FLOW: list[type[BaseException]] = list(_CONTROL_FLOW)
NO_WAIT = Backoff(base=0)


class Seen:
    """Records every exception handed to the predicate, the delay hook and the fallback."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, BaseException]] = []

    def predicate(self, exc: BaseException) -> bool:
        self.handed.append(("on", exc))
        return True

    def hook(self, outcome: Any) -> float | None:
        self.handed.append(("delay_hook", outcome))
        return None

    def fallback(self, exc: BaseException) -> str:
        self.handed.append(("fallback", exc))
        return "fallback"


def policies(seen: Seen, *, fallback: bool) -> list[dict[str, Any]]:
    """Every way to say "retry everything": the predicate, the hook and the fallback watch."""
    extra: dict[str, Any] = {"delay_hook": seen.hook, "backoff": NO_WAIT, "attempts": 5}
    if fallback:
        extra["fallback"] = seen.fallback
    return [
        {"on": BaseException, **extra},
        {"on": (BaseException, Exception), **extra},
        {"on": seen.predicate, **extra},
    ]


def raiser(errors: list[BaseException]) -> Callable[[], str]:
    """A function that raises the next of *errors*, counting its calls in ``.calls``."""

    def call() -> str:
        call.calls += 1  # type: ignore[attr-defined]
        raise errors.pop(0)

    call.calls = 0  # type: ignore[attr-defined]
    return call


@pytest.mark.parametrize("kind", CONTROL_FLOW, ids=lambda k: k.__name__)
class TestPlainCalls:
    def test_sync_passes_through_at_once(self, kind: type[BaseException], clock: FakeClock) -> None:
        seen = Seen()
        for fields in policies(seen, fallback=True):
            error = kind()
            target = raiser([error])
            with pytest.raises(kind) as info:
                retry(**fields)(target)()
            assert info.value is error  # the same object, untouched
            assert not getattr(error, "__notes__", None)
            assert 1 == target.calls  # type: ignore[attr-defined]
        assert [] == seen.handed

    def test_sync_after_a_retried_failure(
        self, kind: type[BaseException], clock: FakeClock
    ) -> None:
        """A retried failure first, then control flow: it stops the loop, no more attempts."""
        seen = Seen()
        error = kind()
        target = raiser([ValueError("retried"), error, ValueError("never reached")])
        decorated = retry(on=seen.predicate, attempts=5, backoff=NO_WAIT)(target)
        with pytest.raises(kind) as info:
            decorated()
        assert info.value is error
        assert 2 == target.calls  # type: ignore[attr-defined]
        assert [("on", "retried")] == [(where, str(exc)) for where, exc in seen.handed]
        tracker = decorated._self_layers[0].tracker  # type: ignore[attr-defined]
        assert (0, 0, 1) == (tracker.waiting, tracker.running, tracker.completed)

    @pytest.mark.anyio
    async def test_async_passes_through_at_once(
        self, kind: type[BaseException], clock: FakeClock
    ) -> None:
        seen = Seen()
        for fields in policies(seen, fallback=True):
            error = kind()
            calls = []

            @retry(**fields)
            async def target() -> str:
                calls.append(1)
                raise error

            with pytest.raises(kind) as info:
                await target()
            assert info.value is error
            assert not getattr(error, "__notes__", None)
            assert 1 == len(calls)
        assert [] == seen.handed

    @pytest.mark.anyio
    async def test_async_with_attempt_timeout(
        self, kind: type[BaseException], clock: FakeClock
    ) -> None:
        """attempt_timeout wraps each attempt in a scope: control flow still passes through."""
        seen = Seen()
        error = kind()
        calls = []

        @retry(on=seen.predicate, attempt_timeout=5.0, backoff=NO_WAIT)
        async def target() -> str:
            calls.append(1)
            raise error

        with pytest.raises(kind) as info:
            await target()
        assert info.value is error
        assert (1, []) == (len(calls), seen.handed)


@pytest.mark.parametrize("kind", CONTROL_FLOW, ids=lambda k: k.__name__)
class TestGenerators:
    def test_generator_before_its_first_item(
        self, kind: type[BaseException], clock: FakeClock
    ) -> None:
        seen = Seen()
        for fields in policies(seen, fallback=False):
            error = kind()
            calls = []

            @retry(**fields)
            def stream() -> Iterator[int]:
                calls.append(1)
                raise error
                yield 1  # pragma: no cover - makes this a generator

            with pytest.raises(kind) as info:
                next(stream())
            assert info.value is error
            assert 1 == len(calls)
        assert [] == seen.handed

    @pytest.mark.anyio
    async def test_async_generator_before_its_first_item(
        self, kind: type[BaseException], clock: FakeClock
    ) -> None:
        seen = Seen()
        for fields in policies(seen, fallback=False):
            error = kind()
            calls = []

            @retry(**fields)
            async def stream() -> AsyncIterator[int]:
                calls.append(1)
                raise error
                yield 1  # pragma: no cover - makes this an async generator

            with pytest.raises(kind) as info:
                await stream().__anext__()
            assert info.value is error
            assert 1 == len(calls)
        assert [] == seen.handed

    def test_generator_after_its_first_item_gets_no_note(
        self, kind: type[BaseException], clock: FakeClock
    ) -> None:
        """After the first item a control-flow error is not "not retried": it is not ours."""
        error = kind()

        @retry(on=BaseException)
        def stream() -> Iterator[int]:
            yield 1
            raise error

        items = stream()
        assert 1 == next(items)
        with pytest.raises(kind) as info:
            next(items)
        assert info.value is error
        assert not getattr(error, "__notes__", None)


class TestWhileWaiting:
    def test_interrupt_during_a_backoff_sleep(self) -> None:
        """A KeyboardInterrupt in the middle of a wait ends the loop; the tracker is left clean."""

        class Interrupting(FakeClock):
            def sleep(self, seconds: float) -> None:
                raise KeyboardInterrupt

        calls = []

        @retry(attempts=5, backoff=Backoff(base=1.0), clock=Interrupting())
        def failing() -> None:
            calls.append(1)
            raise ValueError("retried")

        with pytest.raises(KeyboardInterrupt):
            failing()
        assert 1 == len(calls)
        tracker = failing._self_layers[0].tracker  # type: ignore[attr-defined]
        assert (0, 0, 1) == (tracker.waiting, tracker.running, tracker.completed)

    def test_cancelled_during_a_backoff_sleep(self) -> None:
        """Cancelling a task that waits out a backoff delay cancels it: no further attempt."""
        calls = []

        @retry(attempts=5, backoff=Backoff(base=5.0, jitter="none"))  # cancelled long before
        async def failing() -> None:
            calls.append(1)
            raise ValueError("retried")

        async def main() -> None:
            task = asyncio.ensure_future(failing())
            for _ in range(5):
                await asyncio.sleep(0)
            assert 1 == failing._self_layers[0].tracker.waiting  # type: ignore[attr-defined]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert 1 == len(calls)
        tracker = failing._self_layers[0].tracker  # type: ignore[attr-defined]
        assert (0, 0, 1) == (tracker.waiting, tracker.running, tracker.completed)
