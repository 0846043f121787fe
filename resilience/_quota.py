"""
Advertised quotas: read what a server says is left of its rate limits, from its headers.

``parse_quota(headers)`` reads four families into ``Quota`` objects (``name``, ``limit``,
``remaining``, ``reset`` in seconds from now):

- IETF ``RateLimit`` / ``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers):
  ``"default";r=50;t=30`` and ``"burst";q=100;w=60``; items with one name merge (``q`` the
  limit, ``r`` remaining, ``t`` the reset; a policy's ``w`` is its window, not a reset);
- OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets such as
  ``1s``, ``6m0s``, ``20ms``;
- Anthropic's ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}``, resets in RFC 3339;
- the plain ``x-ratelimit-{limit,remaining,reset}`` trio (GitHub and many others), named
  ``"default"``; a reset above 10**9 is a Unix time, otherwise seconds.

Parsing never raises: a malformed field is skipped, and a quota none of whose fields parse
is left out. ``quota_source(outcome)`` finds the headers on a result or exception the same
way the retry delay hook does.
"""

from __future__ import annotations

import math
import re

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from resilience._retry_after import _attribute, _lower_headers


__all__ = ["Quota", "parse_quota", "quota_source"]

_INT: Final = re.compile(r"[0-9]{1,18}", re.ASCII)
_NUMBER: Final = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?", re.ASCII)
_DURATION_PART: Final = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|h|m|s)", re.ASCII)
_UNITS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIX: Final = 10**9
_WS: Final = " \t"
_OPENAI: Final = ("requests", "tokens")
_ANTHROPIC: Final = ("requests", "tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class Quota:
    """
    One quota a server advertises: its name, its size, what is left, and when it resets.

    Attributes:
        name: ``"requests"``, ``"tokens"``, an IETF policy name, or ``"default"``.
        limit: The quota's size, or None if not advertised.
        remaining: What is left of it now, or None.
        reset: Seconds from now until it resets (0.0 if in the past), or None.

    .. versionadded:: 0.2.0
    """

    name: str
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None

    @property
    def exhausted(self) -> bool:
        """Whether nothing is left (``remaining == 0``)."""
        return self.remaining == 0


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip(_WS)
    return int(text) if _INT.fullmatch(text) else None


def _seconds(text: str | None) -> float | None:
    """A delta in seconds: digits (a decimal too)."""
    if text is None:
        return None
    text = text.strip(_WS)
    return float(text) if _NUMBER.fullmatch(text) else None


def _duration(text: str | None) -> float | None:
    """OpenAI's resets: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``; bare digits are seconds."""
    if text is None:
        return None
    text = text.strip(_WS)
    if _NUMBER.fullmatch(text):
        return float(text)
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        return None
    return total


def _rfc3339(text: str | None, now: datetime) -> float | None:
    if text is None:
        return None
    text = text.strip(_WS)
    if not re.fullmatch(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"([Zz]|[+-][0-9]{2}:[0-9]{2})",
        text,
        re.ASCII,
    ):
        return None
    cleaned = text.replace("z", "Z").replace("t", "T").replace(" ", "T").replace("Z", "+00:00")
    head, dot, rest = cleaned.partition(".")
    if dot:  # fromisoformat takes at most 6 fractional digits on older Pythons
        digits = re.match(r"[0-9]+", rest)
        assert digits is not None
        cleaned = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    return max(0.0, (moment - now).total_seconds())


def _plain_reset(text: str | None, now: datetime) -> float | None:
    seconds = _seconds(text)
    if seconds is None:
        return None
    if seconds > _UNIX:  # a Unix time (GitHub's x-ratelimit-reset)
        return max(0.0, seconds - now.timestamp())
    return seconds


def _structured_items(text: str | None) -> list[tuple[str, dict[str, str]]]:
    """The items of an RFC 8941 list: ``"name";k=v;k=v, token;k=v`` (lenient, never raises)."""
    if not text:
        return []
    items = []
    for raw in text.split(","):
        parts = [part.strip(_WS) for part in raw.split(";")]
        head = parts[0]
        if len(head) >= 2 and head[0] == head[-1] == '"':
            name = head[1:-1]
        elif re.fullmatch(r"[A-Za-z*][A-Za-z0-9_.*:/%!#$&'+^`|~-]*", head, re.ASCII):
            name = head
        else:
            continue
        params: dict[str, str] = {}
        for part in parts[1:]:
            key, equals, value = part.partition("=")
            if equals:
                params.setdefault(key.strip(_WS).lower(), value.strip(_WS))
        items.append((name, params))
    return items


def _ietf(headers: dict[str, str]) -> list[Quota]:
    merged: dict[str, dict[str, object]] = {}
    for name, params in _structured_items(headers.get("ratelimit-policy")):
        entry = merged.setdefault(name, {})
        limit = _int(params.get("q"))
        if limit is not None:
            entry.setdefault("limit", limit)
    for name, params in _structured_items(headers.get("ratelimit")):
        entry = merged.setdefault(name, {})
        for field, value in (
            ("limit", _int(params.get("q"))),
            ("remaining", _int(params.get("r"))),
            ("reset", _seconds(params.get("t"))),
        ):
            if value is not None:
                entry[field] = value
    return [Quota(name, **entry) for name, entry in merged.items() if entry]  # type: ignore[arg-type]


def _family(
    names: tuple[str, ...],
    headers: dict[str, str],
    pattern: str,
    reset: object,
) -> list[Quota]:
    quotas = []
    for name in names:
        limit = _int(headers.get(pattern.format(field="limit", name=name)))
        remaining = _int(headers.get(pattern.format(field="remaining", name=name)))
        raw = headers.get(pattern.format(field="reset", name=name))
        when = reset(raw)  # type: ignore[operator]
        if limit is not None or remaining is not None or when is not None:
            quotas.append(Quota(name, limit, remaining, when))
    return quotas


def parse_quota(headers: object, *, now: datetime | None = None) -> list[Quota]:
    """
    Read the quotas a server advertises in *headers*; never raises.

    Args:
        headers: A mapping or an iterable of ``(name, value)`` pairs (dict, httpx.Headers,
            requests' headers, ``email.message.Message``); names are case-insensitive.
        now: The reference time for RFC 3339 and Unix-time resets (naive means UTC; None:
            the current time).

    Returns:
        One ``Quota`` per quota found, IETF ones first, then OpenAI's, Anthropic's and the
        plain trio's; unknown or malformed fields are skipped.

    .. versionadded:: 0.2.0
    """
    try:
        lowered = _lower_headers(headers)
        if now is None:
            moment = datetime.now(UTC)
        else:
            moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        return [
            *_ietf(lowered),
            *_family(_OPENAI, lowered, "x-ratelimit-{field}-{name}", _duration),
            *_family(
                _ANTHROPIC,
                lowered,
                "anthropic-ratelimit-{name}-{field}",
                lambda raw: _rfc3339(raw, moment),
            ),
            *_family(
                ("default",),
                lowered,
                "x-ratelimit-{field}",
                lambda raw: _plain_reset(raw, moment),
            ),
        ]
    except Exception:
        return []


def quota_source(outcome: object) -> object:
    """Return the headers of a result or exception (``.response.headers``, ``.headers``)."""
    response = _attribute(outcome, "response")
    headers = _attribute(response, "headers") if response is not None else None
    if headers is None:
        headers = _attribute(outcome, "headers")
    return headers


def pause_for(outcome: object) -> float | None:
    """The seconds until the first exhausted advertised quota resets, or None."""
    headers = quota_source(outcome)
    if headers is None:
        return None
    waits = [
        quota.reset
        for quota in parse_quota(headers)
        if quota.exhausted and quota.reset is not None and math.isfinite(quota.reset)
    ]
    positive = [wait for wait in waits if wait > 0.0]
    return max(positive) if positive else None
