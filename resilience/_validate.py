"""
Tiny checkers shared by every policy: each error names the field and the accepted range.

They run when a policy is built (at decoration time), never on the call path. Every number is
checked for range *before* any arithmetic on it, so a huge int (``10**400``) or float
(``1e308``) is a ``ValueError`` that names the field and the range, never an ``OverflowError``
later: durations stop at ``MAX_DURATION`` (10**7 s, about 115 days), counts at ``MAX_COUNT``
and other numbers at ``MAX_NUMBER`` unless the caller gives a tighter bound.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from resilience._errors import CONTROL_FLOW


__all__ = [
    "MAX_COUNT",
    "MAX_DURATION",
    "MAX_NUMBER",
    "MIN_DURATION",
    "check_bool",
    "check_choice",
    "check_clock",
    "check_int",
    "check_number",
    "check_store",
    "duration",
    "exception_predicate",
    "optional_callable",
]


#: The longest duration any field accepts, in seconds (about 115 days).
MAX_DURATION: Final = 10_000_000.0
#: The shortest positive duration a "> 0" field accepts: below it, arithmetic on it underflows.
MIN_DURATION: Final = 1e-9
#: The largest count (attempts, a rate, a limit...) any field accepts.
MAX_COUNT: Final = 1_000_000_000
#: The largest plain number (a multiplier, a ratio...) a field without its own bound accepts.
MAX_NUMBER: Final = 1e9


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
    bound = ">" if strict else ">="
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_DURATION <= value <= MAX_DURATION:  # before float(): 10**400 overflows
            msg = (
                f"{_name(owner, field)} must be a duration {bound} {minimum:g} s and at most "
                f"{_num(MAX_DURATION)} seconds, got {_short(value)}"
            )
            raise ValueError(msg)
        seconds = float(value)
    elif isinstance(value, float):
        seconds = value
    else:
        none = " or None" if allow_none else ""
        msg = (
            f"{_name(owner, field)} must be a number of seconds or a timedelta{none}, "
            f"got {type(value).__name__} {_short(value)}"
        )
        raise TypeError(msg)
    if math.isnan(seconds) or (math.isinf(seconds) and not allow_inf):
        msg = (
            f"{_name(owner, field)} must be a finite duration {bound} {minimum:g} s "
            f"and at most {_num(MAX_DURATION)} seconds, got {value!r}"
        )
        raise ValueError(msg)
    if seconds < minimum or (strict and seconds == minimum):
        msg = f"{_name(owner, field)} must be {bound} {minimum:g} seconds, got {value!r}"
        raise ValueError(msg)
    if strict and minimum == 0.0 and seconds < MIN_DURATION:
        msg = f"{_name(owner, field)} must be at least {MIN_DURATION:g} seconds, got {value!r}"
        raise ValueError(msg)
    if seconds > MAX_DURATION and not (allow_inf and math.isinf(seconds)):
        msg = (
            f"{_name(owner, field)} must be at most {_num(MAX_DURATION)} seconds "
            f"(about 115 days), got {value!r}"
        )
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
        msg = f"{_name(owner, field)} must be a number, got {type(value).__name__} {_short(value)}"
        raise TypeError(msg)
    limit = MAX_NUMBER if high is None else high
    wanted = _range(low, high, low_open, high_open, limit)
    if isinstance(value, int) and not -MAX_NUMBER <= value <= limit:  # before float()
        msg = f"{_name(owner, field)} must be {wanted}, got {_short(value)}"
        raise ValueError(msg)
    number = float(value)
    too_low = low is not None and (number < low or (low_open and number == low))
    too_high = number > limit or (high_open and number == limit)
    if not math.isfinite(number) or too_low or too_high:
        msg = f"{_name(owner, field)} must be {wanted}, got {value!r}"
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
            f"got {type(value).__name__} {_short(value)}"
        )
        raise TypeError(msg)
    limit = MAX_COUNT if high is None else high
    if (low is not None and value < low) or value > limit:
        wanted = _range(low, high, False, False, limit)
        msg = f"{_name(owner, field)} must be {wanted}, got {_short(value)}"
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


def check_clock(owner: str, value: object) -> None:
    """Raise naming ``owner.clock`` unless *value* is None or a ``resilience.typing.Clock``."""
    from resilience.typing import Clock  # noqa: PLC0415 - typing is a public module, kept light

    if value is not None and not isinstance(value, Clock):
        msg = (
            f"{owner}.clock must provide monotonic(), time(), sleep() and asleep() "
            f"(see resilience.typing.Clock), got {type(value).__name__}"
        )
        raise TypeError(msg)


def check_store(owner: str, value: object) -> None:
    """Raise naming ``owner.store`` unless *value* is None or a store (it has ``backend()``)."""
    if value is not None and not callable(getattr(value, "backend", None)):
        msg = (
            f"{owner}.store must be a store such as MemoryStore() or RedisStore(url), or None, "
            f"got {type(value).__name__}"
        )
        raise TypeError(msg)


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


def _short(value: object) -> str:
    """``repr`` of *value*, cut short: ``repr(10**400)`` is 401 digits (and 10**5000 raises)."""
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"an int of about 10**{int(value.bit_length() * 0.30103)}"  # type: ignore[attr-defined]
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def _range(
    low: float | None,
    high: float | None,
    low_open: bool,
    high_open: bool,
    ceiling: float | None = None,
) -> str:
    """The accepted range in words; *ceiling* is the implicit upper bound when *high* is None."""
    if low is not None and high is not None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        return f"in {left}{_num(low)}, {_num(high)}{right}"
    at_most = f" (and at most {_num(ceiling)})" if ceiling is not None else ""
    if low is not None:
        return f"{'>' if low_open else '>='} {_num(low)}{at_most}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_num(high)}"
    return f"a finite number{at_most}"


def _num(value: float) -> str:
    """A bound as people write it: 1000000000, not 1e+09; 0.5 stays 0.5."""
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}"
