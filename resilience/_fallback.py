"""
Fallbacks: what a decorated call answers instead of raising, shared by every decorator.

A fallback is a plain value, or a callable (sync or async) that receives the exception and
returns the answer. It is checked when the policy is built (a callable must accept the
exception as its one positional argument) and when it is bound to a target (an async
fallback cannot answer for a sync function; generators cannot be answered for at all).
"""

from __future__ import annotations

import inspect

from typing import Any


__all__ = ["Fallback", "check_fallback"]


def check_fallback(owner: str, value: object) -> None:
    """Raise ``TypeError`` naming ``owner.fallback`` if a callable *value* cannot take the exception."""
    if value is None or not callable(value):
        return
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        signature.bind(ValueError("probe"))
    except TypeError:
        msg = (
            f"{owner}.fallback must be a value, or a callable taking the exception as its one "
            f"positional argument (such as `lambda exc: default`), got {value!r} "
            f"with signature {signature}"
        )
        raise TypeError(msg) from None


class Fallback:
    """A policy's ``fallback`` resolved once, at decoration time, for one decorated callable."""

    __slots__ = ("is_async", "is_callable", "value")

    def __init__(self, value: object) -> None:
        self.value = value
        self.is_callable = callable(value)
        self.is_async = self.is_callable and (
            inspect.iscoroutinefunction(value)
            or inspect.iscoroutinefunction(getattr(value, "__call__", None))  # noqa: B004
        )

    def check(self, decorator: str, kind: str, qualname: str) -> None:
        """Raise ``TypeError`` if this fallback cannot answer for a callable of *kind*."""
        if kind in ("gen", "asyncgen"):
            msg = (
                f"@{decorator}(fallback=...) does not apply to generator functions ({qualname}): "
                f"a generator's items cannot be replaced by one value"
            )
            raise TypeError(msg)
        if kind == "sync" and self.is_async:
            msg = (
                f"@{decorator}(fallback=...) got an async callable {self.value!r} for the sync "
                f"function {qualname}; use a sync fallback"
            )
            raise TypeError(msg)

    def sync(self, exc: BaseException) -> Any:
        """Return the answer for a sync call that failed with *exc*."""
        if self.is_callable:
            return self.value(exc)  # type: ignore[operator]
        return self.value

    async def asynchronous(self, exc: BaseException) -> Any:
        """Return the answer for an async call that failed with *exc* (awaiting it if need be)."""
        if not self.is_callable:
            return self.value
        answer = self.value(exc)  # type: ignore[operator]
        if inspect.isawaitable(answer):
            return await answer
        return answer

    def __repr__(self) -> str:
        return f"Fallback({self.value!r})"
