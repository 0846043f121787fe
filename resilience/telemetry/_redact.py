"""
Redaction: secrets never leave through a log line or a reported batch.

A key is sensitive when its lower-cased name contains one of the sensitive names
(``authorization``, ``cookie``, ``api_key``, ``token``, ``secret``, ``password``...), so
``X-Api-Key``, ``access_token`` and ``Set-Cookie`` are all caught. Values that look like
credentials (``Bearer ...``, ``Basic ...``) are redacted under any key. Nested mappings,
sequences and ``(name, value)`` header pairs are walked, with a depth limit.
"""

from __future__ import annotations

import re
import threading

from collections.abc import Iterable, Mapping
from typing import Any

from resilience._config import on_reset


__all__ = [
    "DEFAULT_SENSITIVE",
    "REDACTED",
    "add_sensitive",
    "is_sensitive",
    "redact",
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
        "token",
        "secret",
        "password",
        "passwd",
        "credential",
        "private_key",
    }
)

_CREDENTIAL_VALUE = re.compile(r"^\s*(bearer|basic|digest|token)\s+\S", re.IGNORECASE)
_MAX_DEPTH = 8


class _Names:
    """The sensitive names; the tuple is swapped whole under a lock, read without one."""

    __slots__ = ("_lock", "names", "verdicts")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set(DEFAULT_SENSITIVE)

    def _set(self, names: Iterable[str]) -> None:
        self.names: tuple[str, ...] = tuple(sorted(set(names)))
        #: key -> sensitive?, for the default names only; keys repeat, so this saves the scan.
        self.verdicts: dict[str, bool] = {}

    def add(self, names: Iterable[str]) -> None:
        with self._lock:
            self._set({*self.names, *names})

    def reset(self) -> None:
        with self._lock:
            self._set(DEFAULT_SENSITIVE)


_names = _Names()


def add_sensitive(*names: str) -> None:
    """
    Mark more key names as sensitive, process-wide (case-insensitive, matched as substrings).

    Raises:
        TypeError: If a name is not a string.
        ValueError: If a name is empty.

    .. versionadded:: 0.1.0
    """
    for name in names:
        if not isinstance(name, str):
            msg = f"sensitive names must be strings, got {type(name).__name__} {name!r}"
            raise TypeError(msg)
        if not name.strip():
            msg = "sensitive names must be non-empty strings, got ''"
            raise ValueError(msg)
    _names.add(n.strip().lower() for n in names)


def sensitive_names() -> frozenset[str]:
    """
    Return the key names currently treated as sensitive.

    .. versionadded:: 0.1.0
    """
    return frozenset(_names.names)


def is_sensitive(key: object, extra: Iterable[str] = ()) -> bool:
    """
    Whether a value stored under *key* must be redacted.

    .. versionadded:: 0.1.0
    """
    if not isinstance(key, str):
        return False
    verdicts = _names.verdicts
    verdict = verdicts.get(key)
    if verdict is None:
        lowered = key.lower()
        verdict = any(name in lowered for name in _names.names)
        if len(verdicts) < 4096:
            verdicts[key] = verdict
    return verdict or (bool(extra) and any(name.lower() in key.lower() for name in extra))


def redact(data: Mapping[str, Any], sensitive: Iterable[str] = ()) -> dict[str, Any]:
    """
    Return a copy of *data* with every sensitive value replaced by ``"[REDACTED]"``.

    Args:
        data: The metadata to clean; it is not modified.
        sensitive: More key names to treat as sensitive for this call only.

    .. versionadded:: 0.1.0
    """
    extra = tuple(sensitive)
    return {k: _clean_item(k, v, extra, 0) for k, v in data.items()}


def _clean_item(key: object, value: Any, extra: tuple[str, ...], depth: int) -> Any:
    if is_sensitive(key, extra):
        return REDACTED
    return _clean(value, extra, depth + 1)


def _clean(value: Any, extra: tuple[str, ...], depth: int) -> Any:
    # Walk containers; a value that reads like a credential is redacted wherever it sits.
    if isinstance(value, str):
        return REDACTED if _CREDENTIAL_VALUE.match(value) else value
    if depth > _MAX_DEPTH or isinstance(value, int | float | bool | bytes) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _clean_item(k, v, extra, depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if (
            len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], str | bytes)
            and is_sensitive(value[0], extra)
        ):
            pair = [value[0], REDACTED]  # a (name, value) header pair
            return pair if isinstance(value, list) else tuple(pair)
        items = [_clean(v, extra, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


on_reset(_names.reset)
