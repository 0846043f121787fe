"""
Tiny checkers shared by every policy: each error names the field and the accepted range.

They run when a policy is built (at decoration time), never on the call path.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from resilience._errors import CONTROL_FLOW


__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "duration",
    "exception_predicate",
    "optional_callable",
]


def _name(owner: str, field: str) -> str:
    return f"{owner}.{field}" if owner else field


def duration(
    owner: str,
    field: str,
    value: object,
    *,
    minimum: float = 0.0,
    strict: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> float | None:
    """
    Return *value* (float seconds or ``timedelta``) as float seconds, or raise naming *field*.

    *strict* excludes *minimum* itself from the accepted range.
    """
    if value is None:
        if allow_none:
            return None
        msg = f"{_name(owner, field)} must be a duration in seconds, got None"
        raise TypeError(msg)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        none = " or None" if allow_none else ""
        msg = (
            f"{_name(owner, field)} must be a number of seconds or a timedelta{none}, "
            f"got {type(value).__name__} {value!r}"
        )
        raise TypeError(msg)
    bound = ">" if strict else ">="
    if math.isnan(seconds) or (math.isinf(seconds) and not allow_inf):
        msg = (
            f"{_name(owner, field)} must be a finite duration {bound} {minimum:g} s, got {value!r}"
        )
        raise ValueError(msg)
    if seconds < minimum or (strict and seconds == minimum):
        msg = f"{_name(owner, field)} must be {bound} {minimum:g} seconds, got {value!r}"
        raise ValueError(msg)
    return seconds


def check_number(
    owner: str,
    field: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return *value* as a finite float inside [*low*, *high*] (ends open on request)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        msg = f"{_name(owner, field)} must be a number, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    number = float(value)
    too_low = low is not None and (number < low or (low_open and number == low))
    too_high = high is not None and (number > high or (high_open and number == high))
    if not math.isfinite(number) or too_low or too_high:
        msg = (
            f"{_name(owner, field)} must be {_range(low, high, low_open, high_open)}, got {value!r}"
        )
        raise ValueError(msg)
    return number


def check_int(
    owner: str,
    field: str,
    value: object,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Return *value* as an int inside [*low*, *high*], or raise naming *field*."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        none = " or None" if allow_none else ""
        msg = (
            f"{_name(owner, field)} must be a whole number{none}, "
            f"got {type(value).__name__} {value!r}"
        )
        raise TypeError(msg)
    if (low is not None and value < low) or (high is not None and value > high):
        msg = f"{_name(owner, field)} must be {_range(low, high, False, False)}, got {value!r}"
        raise ValueError(msg)
    return value


def check_bool(owner: str, field: str, value: object) -> bool:
    """Return *value* if it is a bool, or raise naming *field*."""
    if not isinstance(value, bool):
        msg = f"{_name(owner, field)} must be True or False, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    return value


def check_choice(owner: str, field: str, value: object, choices: tuple[str, ...]) -> str:
    """Return *value* if it is one of *choices*, or raise listing them."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        msg = f"{_name(owner, field)} must be one of {listed}, got {value!r}"
        raise ValueError(msg)
    return str(value)


def optional_callable(owner: str, field: str, value: object) -> None:
    """Raise naming *field* unless *value* is None or callable."""
    if value is not None and not callable(value):
        msg = f"{_name(owner, field)} must be a callable or None, got {type(value).__name__}"
        raise TypeError(msg)


def exception_predicate(owner: str, field: str, value: object) -> Callable[[BaseException], bool]:
    """
    Turn an exception class, a tuple of them, or a predicate into one predicate.

    Classes are checked with ``isinstance``; a predicate is called with the exception.
    Control flow (``CONTROL_FLOW``: cancellation, interrupts, exits) is never a match, and
    is never shown to the user's predicate, even with ``on=BaseException``.
    """
    flow = CONTROL_FLOW
    if isinstance(value, type) and issubclass(value, BaseException):
        exc_type: type[BaseException] = value
        if not issubclass(value, Exception) or issubclass(value, flow):
            return lambda exc: isinstance(exc, exc_type) and not isinstance(exc, flow)
        return lambda exc: isinstance(exc, exc_type)
    if isinstance(value, tuple):
        if not value or not all(
            isinstance(v, type) and issubclass(v, BaseException) for v in value
        ):
            msg = (
                f"{_name(owner, field)} must be an exception class, a non-empty tuple of "
                f"exception classes, or a predicate exc -> bool, got {value!r}"
            )
            raise TypeError(msg)
        exc_types: tuple[type[BaseException], ...] = value
        return lambda exc: isinstance(exc, exc_types) and not isinstance(exc, flow)
    if callable(value):
        predicate: Callable[[BaseException], Any] = value
        return lambda exc: not isinstance(exc, flow) and bool(predicate(exc))
    msg = (
        f"{_name(owner, field)} must be an exception class, a tuple of exception classes, "
        f"or a predicate exc -> bool, got {type(value).__name__} {value!r}"
    )
    raise TypeError(msg)


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        return f"in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "a finite number"
