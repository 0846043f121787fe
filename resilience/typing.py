"""
Public protocols and type aliases, importable as ``resilience.typing.X``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias, runtime_checkable


__all__ = [
    "Clock",
    "DelayHook",
    "ExceptionFilter",
    "ResultPredicate",
    "RetryPredicate",
]


@runtime_checkable
class Clock(Protocol):
    """
    Where decorators read time and how they wait.

    ``resilience.SystemClock`` is the real one; ``resilience.testing.FakeClock`` advances
    virtual time instantly on every sleep.
    """

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards."""
        ...

    def time(self) -> float:
        """Return wall-clock seconds since the epoch (for HTTP dates)."""
        ...

    def sleep(self, seconds: float, /) -> None:
        """Block the calling thread for *seconds*."""
        ...

    async def asleep(self, seconds: float, /) -> None:
        """Suspend the calling task for *seconds*."""
        ...


DelayHook: TypeAlias = Callable[[Any], "float | None"]
"""``outcome -> seconds | None``: a server-given delay read from an exception or a result."""

RetryPredicate: TypeAlias = Callable[[BaseException], bool]
"""``exc -> bool``: whether an exception is worth another attempt."""

ExceptionFilter: TypeAlias = (
    "type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]"
)
"""What ``on=`` accepts: an exception class, a tuple of them, or a predicate."""

ResultPredicate: TypeAlias = Callable[[Any], bool]
"""``result -> bool``: whether a returned value counts as a failure (e.g. a 503 response)."""
