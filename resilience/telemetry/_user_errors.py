"""
User-error classification: whether an exception (or its cause or context) is the caller's fault.

An HTTP status in 400-499 other than 408 and 429, read from ``exc.status_code`` or
``exc.response.status_code``, marks the caller's fault; the reporter sends such exceptions as
``user_error`` warnings instead of unhandled exceptions.
"""

from __future__ import annotations


__all__ = ["find_user_error", "is_user_error", "status_of"]


def status_of(exc: BaseException) -> int | None:
    """Return the HTTP status on *exc* or its ``response``, or None."""
    for holder in (exc, getattr(exc, "response", None)):
        code = getattr(holder, "status_code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def find_user_error(exc: BaseException) -> BaseException | None:
    """
    Return the exception in *exc*'s chain that is the caller's fault, or None.

    An HTTP status in 400-499 other than 408 (timeout) and 429 (rate limit), read from
    ``exc.status_code`` or ``exc.response.status_code``, is the user's. ``__cause__`` is
    walked before ``__context__``; cycles are guarded against.

    .. versionadded:: 0.1.0
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        code = status_of(current)
        if code is not None and 400 <= code < 500 and code not in (408, 429):
            return current
        if current.__context__ is not None:
            stack.append(current.__context__)
        if current.__cause__ is not None:
            stack.append(current.__cause__)  # popped first: the cause before the context
    return None


def is_user_error(exc: BaseException) -> bool:
    """
    Whether *exc* (or its cause or context) is the caller's fault, per ``find_user_error``.

    .. versionadded:: 0.1.0
    """
    return find_user_error(exc) is not None
