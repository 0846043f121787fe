"""Server-directed retry delays: parse ``Retry-After`` and ``retry-after-ms`` headers.

This module owns reading a delay out of HTTP response headers: lowering any header
container to a plain dict, a strict parser for delta-seconds and the three HTTP-date
formats of RFC 9110 §5.6.7, and ``retry_after_from``, the retry policy's default delay
hook. Parsing is faithful; caps and "0 means back off" rules belong to the policy.
"""

from __future__ import annotations

import math
import re

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

from resilience._errors import ResilienceError, is_control_flow


if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Mapping
    from email.message import Message


__all__ = ["parse_retry_after", "retry_after_from", "safe_delay"]

_HeadersLike: TypeAlias = (
    "Mapping[str, object] | Mapping[bytes, object] | Iterable[tuple[object, object]] | Message"
)

_RETRY_AFTER: Final = "retry-after"
_RETRY_AFTER_MS: Final = "retry-after-ms"
_NAMES: Final = frozenset({_RETRY_AFTER, _RETRY_AFTER_MS})

# Optional whitespace around a field value; str.strip() alone would also eat Unicode spaces.
_WS: Final = " \t\r\n"

_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)

_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY: Final = "(?:mon|tue|wed|thu|fri|sat|sun)"
_DAY_LONG: Final = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTH: Final = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME: Final = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
# re.ASCII keeps IGNORECASE from matching e.g. the Kelvin sign against "k".
_FLAGS: Final = re.ASCII | re.IGNORECASE

# Sun, 06 Nov 1994 08:49:37 GMT
_IMF_FIXDATE: Final = re.compile(
    rf"{_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT", _FLAGS
)
# Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_DATE: Final = re.compile(
    rf"{_DAY_LONG}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} GMT", _FLAGS
)
# Sun Nov  6 08:49:37 1994
_ASCTIME_DATE: Final = re.compile(
    rf"{_DAY} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})", _FLAGS
)


def parse_retry_after(headers: _HeadersLike | None, *, now: datetime | None = None) -> float | None:
    """Return the delay in seconds that response headers ask for, or None.

    A parseable ``retry-after-ms`` wins over ``retry-after``; the latter is
    delta-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime). Never raises
    on header content.

    Args:
        headers: A mapping or an iterable of ``(name, value)`` pairs; names are
            case-insensitive, values str, bytes (latin-1) or anything ``str()`` accepts.
        now: Reference time for HTTP-dates; naive means UTC, None means the current time.

    Returns:
        Seconds to wait (0.0 for a date in the past), or None when absent or invalid.
    """
    return _parse(headers, now)


def retry_after_from(outcome: object) -> float | None:
    """Return the delay asked for by an exception's or a result's response headers.

    Reads ``outcome.response.headers`` (httpx.HTTPStatusError, requests.HTTPError),
    else ``outcome.headers``. For resilience's own refusals (``CircuitOpenError``,
    ``RateLimitedError``) it is their ``retry_after``: a retry above an open breaker waits
    exactly until a probe is allowed. Never raises.

    Args:
        outcome: The exception raised or the value returned by the attempt.

    Returns:
        Seconds to wait, or None when there are no usable headers.
    """
    if isinstance(outcome, ResilienceError):
        # our own refusals (an open breaker, a spent rate budget) know when a call can pass
        hint = getattr(outcome, "retry_after", None)
        if isinstance(hint, int | float) and hint > 0 and math.isfinite(hint):
            return float(hint)
        return None
    response = _attribute(outcome, "response")
    # `is not None`, never truthiness: requests.Response is falsy for 4xx and 5xx.
    headers = _attribute(response, "headers") if response is not None else None
    if headers is None:
        headers = _attribute(outcome, "headers")
    if headers is None:
        return None
    return _parse(headers, None)


def safe_delay(
    hook: Callable[[Any], object] | None, outcome: object, *, decorator: str, name: str = ""
) -> float | None:
    """
    Ask a delay hook for a server-given delay, never letting it replace the caller's error.

    Returns the hook's delay as float seconds (0.0 included: the caller then uses its
    backoff), or None when there is no hook, the outcome is control flow (which no hook is
    shown), or the hook gave nothing usable. A hook that raises, or returns something that
    is not a finite number >= 0 (``"5"``, ``10**400``, ``nan``, ``-1``, ``True``), is
    ignored: ``resilience.delay_hook.ignored`` is emitted and the caller backs off.
    """
    if hook is None or is_control_flow(outcome):
        return None
    try:
        value = hook(outcome)
    except Exception as error:  # a broken hook must not replace the caller's error
        _ignored(decorator, name, f"the delay hook raised {type(error).__name__}", outcome)
        return None
    if value is None:
        return None
    if isinstance(value, float) and 0.0 <= value < math.inf:
        return value  # the common case: one check
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9:
        return float(value)
    _ignored(
        decorator,
        name,
        f"the delay hook returned {type(value).__name__} {_short(value)}, "
        f"not a finite number of seconds >= 0",
        outcome,
    )
    return None


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return "(unprintable)"
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _ignored(decorator: str, name: str, reason: str, outcome: object) -> None:
    from resilience.telemetry._bus import BUS, emit  # noqa: PLC0415 - telemetry imports us

    if BUS.subs:
        emit(
            "resilience.delay_hook.ignored",
            {},
            {"decorator": decorator, "name": name, "reason": reason, "outcome": outcome},
        )


def _attribute(obj: object, name: str) -> object:
    """Return ``obj.<name>``, or None if it is missing or its property raises."""
    try:
        return getattr(obj, name, None)
    except Exception:  # a foreign property may raise anything; the hook must not
        return None


def _parse(headers: object, now: datetime | None) -> float | None:
    """Implement ``parse_retry_after`` for a container of any type."""
    lowered = _lower_headers(headers, _NAMES)
    millis_text = lowered.get(_RETRY_AFTER_MS)
    if millis_text is not None:
        millis = _parse_number(millis_text)
        if millis is not None:
            return millis / 1000.0
    text = lowered.get(_RETRY_AFTER)
    if text is None:
        return None
    seconds = _parse_number(text)
    if seconds is not None:
        return seconds
    return _parse_http_date(text.strip(_WS), _aware(now))


def _lower_headers(headers: object, names: Container[str] | None = None) -> dict[str, str]:
    """Lower a header container to a dict of lower-case name -> first non-None value.

    Args:
        headers: A mapping, an object with ``items()`` (email.message.Message) or
            ``multi_items()`` (httpx.Headers), or an iterable of pairs; else empty.
        names: Keep only these lower-case names (None keeps all).

    Returns:
        The lowered headers; empty when the container cannot be read.
    """
    pairs: Iterable[tuple[object, object]]
    if type(headers) is dict:
        pairs = cast("dict[object, object]", headers).items()  # fast path, no foreign code
    elif headers is None or isinstance(headers, str | bytes | bytearray | memoryview):
        return {}
    else:
        try:
            pairs = _pairs(headers)
        except Exception:  # a foreign container whose iteration fails is unreadable
            return {}
    lowered: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = _to_text(raw_name)
        if name is None:
            continue
        name = name.lower()
        if name in lowered or (names is not None and name not in names):
            continue
        value = _to_text(raw_value)
        if value is not None:
            lowered[name] = value
    return lowered


def _pairs(headers: object) -> list[tuple[object, object]]:
    """Collect the ``(name, value)`` pairs of a foreign container, skipping non-pairs."""
    multi_items = getattr(headers, "multi_items", None)
    items = getattr(headers, "items", None)
    if callable(multi_items):  # httpx.Headers.items() joins repeated values with ", "
        source = multi_items()
    elif callable(items):  # Mapping, email.message.Message (which iterates over names)
        source = items()
    else:
        source = headers
    return [
        (entry[0], entry[1])
        for entry in cast("Iterable[object]", source)
        if isinstance(entry, tuple | list) and len(entry) == 2
    ]


def _to_text(value: object) -> str | None:
    """Return a header name or value as str (bytes as latin-1); None if absent or unusable."""
    if isinstance(value, str):
        return str.__str__(value)  # an exact str even for a subclass
    if isinstance(value, bytes | bytearray | memoryview):
        return str(value, "latin-1")
    if value is None:
        return None
    try:
        return str(value)
    except Exception:  # a foreign __str__, or an int past the str-conversion digit limit
        return None


def _parse_number(text: str) -> float | None:
    """Parse ASCII digits with an optional decimal part; None if malformed or non-finite."""
    text = text.strip(_WS)
    if _NUMBER.fullmatch(text) is None:
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _aware(now: datetime | None) -> datetime:
    """Return ``now`` as an aware datetime: naive means UTC, None means the current time."""
    if now is None:
        return datetime.now(UTC)  # looked up at call time so that freezegun applies
    if now.utcoffset() is None:
        return now.replace(tzinfo=UTC)
    return now


def _parse_http_date(text: str, now: datetime) -> float | None:
    """Return seconds from ``now`` until an HTTP-date (0.0 if past), or None if invalid."""
    match = _IMF_FIXDATE.fullmatch(text) or _ASCTIME_DATE.fullmatch(text)
    rfc850 = match is None
    if match is None:
        match = _RFC850_DATE.fullmatch(text)
        if match is None:
            return None
    month = _MONTHS[match["month"].lower()]
    day = int(match["day"].lstrip())
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    leap = 0.0
    if second == 60:  # RFC 9110 time-of-day allows the leap second 23:59:60 only
        if (hour, minute) != (23, 59):
            return None
        second, leap = 59, 1.0
    if rfc850:
        year = _rfc850_year(int(match["year"]), (month, day, hour, minute, second), now)
        if year is None:
            return None
    else:
        year = int(match["year"])
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # Feb 30, hour 24, year 0 and the like
        return None
    return max(0.0, (when - now).total_seconds() + leap)


def _rfc850_year(
    two_digits: int, rest: tuple[int, int, int, int, int], now: datetime
) -> int | None:
    """Resolve a two-digit year per RFC 9110 §5.6.7.

    The latest year with those last two digits whose timestamp is not more than
    50 years after ``now``: a later one would be "more than 50 years in the future"
    and means the most recent past year with the same digits instead.

    Args:
        two_digits: The year modulo 100.
        rest: Month, day, hour, minute and second of the timestamp.
        now: The aware reference time.

    Returns:
        The full year, or None if ``now`` cannot be expressed in UTC.
    """
    try:
        utc = now.astimezone(UTC)
    except (OverflowError, ValueError):  # a `now` at the very edge of datetime's range
        return None
    limit = (utc.year + 50, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond)
    year = limit[0] - (limit[0] - two_digits) % 100
    if (year, *rest, 0) > limit:
        year -= 100
    return year
