"""
Building policies from plain data: ``from_dict`` and ``from_env``, shared by every policy.

Unknown keys are an error that names them, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import os
import re

from collections.abc import Mapping
from typing import Any, ClassVar, Self


__all__ = ["FromDict"]

# ASCII digits only: int() and float() also read "٣" (Arabic-Indic three) as 3.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?inf")
#: Digits past this many are no setting anyone means (and int() refuses 4,300 of them).
_MAX_DIGITS = 40


class FromDict:
    """Mixin for frozen policy dataclasses: construction from mappings and environments."""

    __slots__ = ()

    #: Fields whose value is itself a policy, built from a nested mapping.
    _nested: ClassVar[Mapping[str, type[FromDict]]] = {}

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> Self:
        """
        Build the policy from *mapping*, whose keys are field names.

        Durations are numbers of seconds; a nested policy (such as ``backoff``) may be a
        mapping. Unknown keys raise ``ValueError`` naming them.

        .. versionadded:: 0.1.0
        """
        if not isinstance(mapping, Mapping):
            msg = f"{cls.__name__}.from_dict() takes a mapping, got {type(mapping).__name__}"
            raise TypeError(msg)
        known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in mapping if k not in known)
        if unknown:
            msg = (
                f"unknown {cls.__name__} field(s): {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
            raise ValueError(msg)
        kwargs = dict(mapping)
        for name, nested in cls._nested.items():
            value = kwargs.get(name)
            if isinstance(value, Mapping):
                kwargs[name] = nested.from_dict(value)
        return cls(**kwargs)

    @classmethod
    def from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> Self:
        """
        Build the policy from environment variables named *prefix* + FIELD in upper case.

        For example ``RetryPolicy.from_env("MYAPP_RETRY_")`` reads ``MYAPP_RETRY_ATTEMPTS``
        and ``MYAPP_RETRY_BACKOFF_BASE``. Values are parsed as numbers, ``true``/``false``,
        ``none``, or kept as text; fields without a variable keep their defaults. A text
        field (a name or key) keeps its text, digits included.

        Raises:
            ValueError: Naming the variable, if it is set but blank, or holds digits that
                are not ASCII (``٣``), or a number of more than 40 digits.

        .. versionadded:: 0.1.0
        """
        env = os.environ if environ is None else environ
        return cls.from_dict(cls._collect_env(prefix, env))

    @classmethod
    def _collect_env(cls, prefix: str, env: Mapping[str, str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if not f.init:
                continue
            nested = cls._nested.get(f.name)
            if nested is not None:
                sub = nested._collect_env(f"{prefix}{f.name.upper()}_", env)
                if sub:
                    found[f.name] = sub
                continue
            variable = f"{prefix}{f.name.upper()}"
            raw = env.get(variable)
            if raw is not None:
                _check_env_text(variable, raw)
                # a text field keeps its text: "none" is a jitter name, "42" a key
                text = raw.strip()
                if _is_text_field(f):
                    optional = f.default is None and text.lower() in {"none", "null"}
                    found[f.name] = None if optional else text
                else:
                    found[f.name] = _parse_env_value(raw)
        return found

    def to_dict(self) -> dict[str, Any]:
        """
        Return the fields as a plain dict (nested policies as dicts), the inverse of ``from_dict``.

        .. versionadded:: 0.1.0
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init:
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, FromDict) else value
        return out


def _is_text_field(f: dataclasses.Field[Any]) -> bool:
    """Whether a field holds text: a ``str`` default, or ``str`` in its annotation's union."""
    if isinstance(f.default, str):
        return True
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    parts = {part.strip() for part in annotation.split("|")}
    return "str" in parts and not parts & {"int", "float", "Any", "bool"}


def _check_env_text(variable: str, raw: str) -> None:
    """Refuse a blank variable, non-ASCII digits and absurdly long numbers, naming *variable*."""
    text = raw.strip()
    if not text:
        msg = (
            f"environment variable {variable} is set but blank; unset it to keep the "
            f"default, or write 'none' for no value"
        )
        raise ValueError(msg)
    if any(ch.isdigit() or ch.isdecimal() or ch.isnumeric() for ch in text if not ch.isascii()):
        msg = (
            f"environment variable {variable} holds non-ASCII digits ({text!r}); "
            f"write numbers with the ASCII digits 0-9"
        )
        raise ValueError(msg)
    if sum(ch.isdigit() for ch in text) > _MAX_DIGITS and _FLOAT.fullmatch(text.lower()):
        msg = (
            f"environment variable {variable} holds a number of more than {_MAX_DIGITS} "
            f"digits ({text[:20]}...); no setting is that large"
        )
        raise ValueError(msg)


def _parse_env_value(raw: str) -> Any:
    text = raw.strip()
    lowered = text.lower()
    if lowered in {"none", "null"}:
        return None
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(lowered):
        return float(text)
    return text
