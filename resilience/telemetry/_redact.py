"""
Redaction: secrets never leave through a log line, a reported batch or a span.

Two rules, applied once at every exit (the structlog bridge, the reporter, OpenTelemetry):

- **Keys.** A value is replaced whole when its key names a secret: the key, lower-cased
  and with its separators (``-``, ``_``, ``.``, spaces) removed, contains one of the
  sensitive names, so ``X-Access-Key``, ``private-key``, ``jwt``, ``passphrase`` and
  ``Set-Cookie`` are all caught. Nested mappings, sequences and ``(name, value)`` header
  pairs are walked, with a depth limit.
- **Values.** Every string (and every exception message or traceback, rendered as text)
  is *scrubbed*: the secret part is cut out and the rest kept, so an error still reads
  ``401 for url 'https://api.test/v1?api_key=[REDACTED]'``. Scrubbing finds credentials in
  URLs (userinfo, and query parameters with a sensitive name or ``key``/``sig``/...),
  ``Authorization``/``Proxy-Authorization``/``Cookie``/``Set-Cookie`` header values,
  ``Bearer`` and ``Basic`` credentials anywhere, ``name=value``/``"name": "value"`` pairs
  with a sensitive name, and well-known token shapes (JWTs, ``sk-...``, ``AKIA...``,
  ``ghp_...``, ``xoxb-...`` and kin).

Users add names with ``add_sensitive`` and patterns with ``add_pattern``. Scrubbing is a
few regex passes, each skipped when a cheap substring test says it cannot match, and
short strings (names, reasons) are remembered, so a line without secrets costs little.
"""

from __future__ import annotations

import re
import threading
import traceback

from collections.abc import Iterable, Mapping
from typing import Any

from resilience._config import on_reset


__all__ = [
    "DEFAULT_SENSITIVE",
    "REDACTED",
    "add_pattern",
    "add_sensitive",
    "is_sensitive",
    "redact",
    "scrub",
    "scrub_exception",
    "sensitive_names",
]

REDACTED = "[REDACTED]"

DEFAULT_SENSITIVE: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "api_key",
        "api-key",
        "apikey",
        "access_key",
        "secret_key",
        "private_key",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "jwt",
        "signature",
        "session_id",
        "csrf",
        "xsrf",
        "bearer",
    }
)

#: Query parameters that hold secrets although their names are too plain to be sensitive
#: keys everywhere (``key`` in a URL is an API key; ``key`` in event metadata is ours).
QUERY_NAMES: frozenset[str] = frozenset(
    {"key", "sig", "auth", "code", "client_secret", "x-amz-signature", "x-amz-credential"}
)

_QUERY_HINTS = tuple(f"{name}=" for name in QUERY_NAMES)

_CREDENTIAL_VALUE = re.compile(r"^\s*(bearer|basic|digest|token)\s+\S", re.IGNORECASE)
_MAX_DEPTH = 8

# -- the value patterns (each a pass of its own; see scrub) ------------------------------------

# An Authorization/Cookie header's value, to the end of the line or the closing quote;
# matched only where str.find saw the name (a case-insensitive regex scan is slow).
_HEADER = re.compile(
    r"(?P<name>authorization|cookie)(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\r\n\"']+)",
    re.IGNORECASE,
)
# scheme://userinfo@host: the userinfo (user:password, or a token) goes; matched right after
# each "://" found with str.find, which is far cheaper than letting a regex look for it.
_USERINFO = re.compile(r"[^\s/?#@\"'<>]+@")
# ?name=value&name=value in a URL.
_QUERY = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#\s\"'<>?;]{1,64})=(?P<value>[^&#\s\"'<>;]*)")
# Bearer <token> and Basic <base64> anywhere (Basic needs a base64 look: a digit, +, /, =
# or a case change, so "Basic authentication failed" stays readable).
_SCHEME = re.compile(
    r"\b(?P<scheme>[Bb]earer|BEARER)\s+(?!of\b|token\b)(?P<value>[A-Za-z0-9\-._~+/]+=*)"
    r"|\b(?P<basic>[Bb]asic|BASIC)\s+"
    r"(?P<b64>(?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]|[A-Z]{2}))[A-Za-z0-9+/]{4,}=*)"
)
# Token shapes that are secrets by their look alone.
_SHAPES = re.compile(
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT
    r"|\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic
    r"|\b(?:sk|rk|pk|whsec)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe
    r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|\bglpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face
)
_SHAPE_HINTS: tuple[str, ...] = ("eyJ", "sk-", "_live_", "_test_", "AKIA", "ASIA", "AGPA")
_SHAPE_HINTS += ("AIDA", "AROA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")
_SHAPE_HINTS += ("glpat-", "xox", "AIza", "hf_")
# name=value, name: value, "name": "value", 'name': 'value': the name and separator are
# found first, and only after a sensitive name is a value read (a value read after any name,
# "ValueError: ... password=x", would hide the pairs inside it). An unquoted value runs, after
# "=", up to "&", ";", ",", whitespace or the end; after ":", up to the end of the line, a ","
# or a ";" (so "passphrase: open sesame" goes whole).
# The lookbehind and the possessive name keep it from retrying inside every word.
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<q>[\"']?)(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,63}+)(?P=q)"
    r"(?P<sep>\s*(?:(?P<eq>=)|:)\s*)"
)
_EQ_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|[^\s,;&]+")
_COLON_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|[^\r\n,;]*[^\s,;]")


class _Rules:
    """The sensitive names and user patterns; swapped whole under a lock, read without one."""

    __slots__ = ("_lock", "names", "normalized", "patterns", "scrubbed", "verdicts")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.patterns: tuple[re.Pattern[str], ...] = ()
        self._set(DEFAULT_SENSITIVE)

    def _set(self, names: Iterable[str]) -> None:
        self.names: tuple[str, ...] = tuple(sorted(set(names)))
        self.normalized: tuple[str, ...] = tuple(sorted({_normal(n) for n in self.names}))
        #: key -> sensitive?; keys repeat, so this saves the scan.
        self.verdicts: dict[str, bool] = {}
        #: short text -> scrubbed text; names and reasons repeat on every line.
        self.scrubbed: dict[str, str] = {}

    def add(self, names: Iterable[str]) -> None:
        with self._lock:
            self._set({*self.names, *names})

    def add_pattern(self, pattern: re.Pattern[str]) -> None:
        with self._lock:
            self.patterns = (*self.patterns, pattern)
            self.scrubbed = {}

    def reset(self) -> None:
        with self._lock:
            self.patterns = ()
            self._set(DEFAULT_SENSITIVE)


def _normal(name: str) -> str:
    """A name as compared: lower case, separators gone (``X-Access-Key`` -> ``xaccesskey``)."""
    return _unseparated(name.lower())


def _unseparated(text: str) -> str:
    # four C-level passes: str.translate with a table is ten times slower
    return text.replace("-", "").replace("_", "").replace(".", "").replace(" ", "")


_rules = _Rules()


def add_sensitive(*names: str) -> None:
    """
    Mark more key names as sensitive, process-wide.

    Names match case- and separator-insensitively, as substrings: ``add_sensitive("ssn")``
    redacts ``user_ssn`` and ``SSN-Hash``, in mappings and in ``name=value`` text alike.

    Raises:
        TypeError: If a name is not a string.
        ValueError: If a name has no letter or digit.

    .. versionadded:: 0.1.0
    """
    for name in names:
        if not isinstance(name, str):
            msg = f"sensitive names must be strings, got {type(name).__name__} {name!r}"
            raise TypeError(msg)
        if not _normal(name.strip()):
            msg = f"sensitive names must be non-empty strings with a letter or digit, got {name!r}"
            raise ValueError(msg)
    _rules.add(n.strip().lower() for n in names)


def add_pattern(pattern: str | re.Pattern[str]) -> None:
    r"""
    Scrub every match of *pattern* from text leaving through telemetry, process-wide.

    The whole match becomes ``[REDACTED]``, or only the group named ``secret`` if the
    pattern has one (``r"acct-(?P<secret>\d{8})"`` keeps the ``acct-`` prefix).

    Raises:
        TypeError: If *pattern* is not a string or a compiled pattern of strings.
        ValueError: If it does not compile, or matches the empty string.

    .. versionadded:: 0.1.0
    """
    if isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            msg = f"add_pattern() got a pattern that does not compile: {error}"
            raise ValueError(msg) from None
    elif isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):  # type: ignore[redundant-expr]
        compiled = pattern
    else:
        msg = f"add_pattern() takes a str or a compiled str pattern, got {type(pattern).__name__}"
        raise TypeError(msg)
    if compiled.fullmatch(""):
        msg = f"add_pattern() got a pattern that matches the empty string: {compiled.pattern!r}"
        raise ValueError(msg)
    _rules.add_pattern(compiled)


def sensitive_names() -> frozenset[str]:
    """
    Return the key names currently treated as sensitive.

    .. versionadded:: 0.1.0
    """
    return frozenset(_rules.names)


def is_sensitive(key: object, extra: Iterable[str] = ()) -> bool:
    """
    Whether a value stored under *key* must be redacted (case- and separator-insensitive).

    .. versionadded:: 0.1.0
    """
    if not isinstance(key, str):
        return False
    verdicts = _rules.verdicts
    verdict = verdicts.get(key)
    if verdict is None:
        normal = _normal(key)
        verdict = any(name in normal for name in _rules.normalized)
        if len(verdicts) < 4096:
            verdicts[key] = verdict
    if verdict or not extra:
        return verdict
    normal = _normal(key)
    return any(_normal(name) in normal for name in extra if _normal(name))


# -- scrubbing text ------------------------------------------------------------------------------


def scrub(text: str, sensitive: Iterable[str] = ()) -> str:
    """
    Return *text* with every credential it carries replaced by ``[REDACTED]``.

    Args:
        text: Any text: an exception message, a URL, a traceback, a header dump.
        sensitive: More names to treat as sensitive in ``name=value`` pairs, for this call.

    .. versionadded:: 0.1.0
    """
    extra = tuple(sensitive)
    short = len(text) <= 256 and not extra
    if short:
        cached = _rules.scrubbed.get(text)
        if cached is not None:
            return cached
    clean = _scrub(text, extra)
    if short:
        cache = _rules.scrubbed
        if len(cache) >= 4096:
            cache.clear()
        cache[text] = clean
    return clean


def _scrub(text: str, extra: tuple[str, ...]) -> str:
    lowered = text.lower()
    # One look for any sensitive name (separators removed, as keys are compared): without
    # one, the header and name=value passes cannot match and are skipped.
    normal = _unseparated(lowered)
    named = any(name in normal for name in _rules.normalized) or any(
        _normal(name) in normal for name in extra if _normal(name)
    )
    if named and ("authorization" in lowered or "cookie" in lowered):
        text = _scrub_headers(text)
    if "://" in text and "@" in text:
        text = _scrub_userinfo(text)
    if "=" in text and (named or any(q in lowered for q in _QUERY_HINTS)):
        text = _QUERY.sub(lambda m: _query(m, extra), text)
    if "earer" in lowered or "asic" in lowered:
        text = _SCHEME.sub(_scheme, text)
    if any(hint in text for hint in _SHAPE_HINTS):
        text = _SHAPES.sub(REDACTED, text)
    if named and (":" in text or "=" in text):
        text = _scrub_pairs(text, extra)
    for pattern in _rules.patterns:
        text = pattern.sub(_user_match, text)
    return text


def _scrub_headers(text: str) -> str:
    lowered = text.lower()  # same length and offsets as text for the names we look for
    if len(lowered) != len(text):
        return _HEADER.sub(_keep_name, text)
    spans = []
    for name in ("authorization", "cookie"):
        at = lowered.find(name)
        while at >= 0:
            match = _HEADER.match(text, at)
            if match is not None:
                spans.append((match.start("value"), match.end("value")))
            at = lowered.find(name, at + len(name))
    if not spans:
        return text
    parts = []
    start = 0
    for begin, end in sorted(spans):
        if begin < start:
            continue
        parts.append(text[start:begin])
        parts.append(REDACTED)
        start = end
    parts.append(text[start:])
    return "".join(parts)


def _scrub_userinfo(text: str) -> str:
    parts = []
    start = 0
    find = text.find
    at = find("://")
    while at >= 0:
        begin = at + 3
        match = _USERINFO.match(text, begin)
        if match is None:
            at = find("://", begin)
            continue
        parts.append(text[start:begin])
        parts.append(f"{REDACTED}@")
        start = match.end()
        at = find("://", start)
    if not parts:
        return text
    parts.append(text[start:])
    return "".join(parts)


def _keep_name(match: re.Match[str]) -> str:
    return f"{match['name']}{match['sep']}{REDACTED}"


def _query(match: re.Match[str], extra: tuple[str, ...]) -> str:
    name = match["name"]
    if not match["value"] or not (name.lower() in QUERY_NAMES or is_sensitive(name, extra)):
        return match[0]
    return f"{match['lead']}{name}={REDACTED}"


def _scheme(match: re.Match[str]) -> str:
    if match["scheme"] is not None:
        return f"{match['scheme']} {REDACTED}"
    return f"{match['basic']} {REDACTED}"


def _scrub_pairs(text: str, extra: tuple[str, ...]) -> str:
    parts = []
    start = 0
    for match in _PAIR.finditer(text):
        if match.start() < start or not is_sensitive(match["name"], extra):
            continue
        reader = _EQ_VALUE if match["eq"] is not None else _COLON_VALUE
        found = reader.match(text, match.end())
        if found is None:
            continue
        value = found[0]
        if value.strip("\"'") in ("", REDACTED):
            continue
        quote = value[0] if value[0] in "\"'" and len(value) > 1 else ""
        parts.append(text[start : match.end()])
        parts.append(f"{quote}{REDACTED}{quote}")
        start = found.end()
    if not parts:
        return text
    parts.append(text[start:])
    return "".join(parts)


def _user_match(match: re.Match[str]) -> str:
    if "secret" in match.re.groupindex and match["secret"] is not None:
        start, end = match.span("secret")
        whole_start = match.start()
        text = match[0]
        return f"{text[: start - whole_start]}{REDACTED}{text[end - whole_start :]}"
    return REDACTED


def scrub_exception(exc: BaseException, *, tb: bool = False, sensitive: Iterable[str] = ()) -> str:
    """
    Return ``"Type: message"`` for *exc* (or its whole traceback with *tb*), scrubbed.

    .. versionadded:: 0.1.0
    """
    if tb:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return scrub(text, sensitive)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not break a log line
        message = "<unprintable>"
    return scrub(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, sensitive)


# -- redacting data ------------------------------------------------------------------------------


def redact(
    data: Mapping[str, Any], sensitive: Iterable[str] = (), *, render: bool = False
) -> dict[str, Any]:
    """
    Return a copy of *data* with every secret replaced by ``"[REDACTED]"``.

    Values under a sensitive key are replaced whole; every other string is scrubbed (see
    ``scrub``). Nested mappings, lists, tuples and header pairs are walked.

    Args:
        data: The metadata to clean; it is not modified.
        sensitive: More key names to treat as sensitive for this call only.
        render: Also turn what is not plain data into scrubbed text: an exception into
            ``"Type: message"``, bytes into text, any other object into its ``repr``. An
            exit that writes text (a log line, a JSON batch) sets it, so no ``repr`` of an
            object can carry a secret past it.

    .. versionadded:: 0.1.0
    """
    extra = tuple(sensitive)
    return {k: _clean_item(k, v, extra, 0, render) for k, v in data.items()}


def _clean_item(key: object, value: Any, extra: tuple[str, ...], depth: int, render: bool) -> Any:
    if is_sensitive(key, extra):
        return REDACTED
    return _clean(value, extra, depth + 1, render)


def _clean(value: Any, extra: tuple[str, ...], depth: int, render: bool) -> Any:
    # Walk containers; a value that reads like a credential is redacted wherever it sits.
    if isinstance(value, str):
        if _CREDENTIAL_VALUE.match(value):
            return REDACTED
        return scrub(value, extra)
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, BaseException):
        return scrub_exception(value, sensitive=extra) if render else value
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"), extra) if render else value
    if depth > _MAX_DEPTH:
        return scrub(_repr(value)[:200], extra) if render else value
    if isinstance(value, Mapping):
        return {k: _clean_item(k, v, extra, depth, render) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if (
            len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], str | bytes)
            and is_sensitive(value[0], extra)
        ):
            pair = [value[0], REDACTED]  # a (name, value) header pair
            return pair if isinstance(value, list) else tuple(pair)
        items = [_clean(v, extra, depth + 1, render) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if render:
        if isinstance(value, set | frozenset):
            return [_clean(v, extra, depth + 1, render) for v in value]
        return scrub(_repr(value), extra)
    return value


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break a log line
        return f"<{type(value).__name__} (unprintable)>"


on_reset(_rules.reset)
