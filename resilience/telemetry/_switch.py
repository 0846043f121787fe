"""
The telemetry switch: ``set_enabled``/``is_enabled`` and the ``RESILIENCE_TELEMETRY`` variable.

Switched off, the structlog bridge writes nothing and reporters queue nothing; the event bus
itself still delivers to handlers that were attached on purpose. The variable is read with
the Tinker SDK's allowlist: unset or one of ``1``, ``true``, ``yes``, ``on`` (any case) means
on; anything else, even an empty string, means off.
"""

from __future__ import annotations

import os

from collections.abc import Mapping

from resilience._config import on_reset


__all__ = ["ENV_VAR", "env_enabled", "is_enabled", "set_enabled"]

ENV_VAR = "RESILIENCE_TELEMETRY"
_ON = frozenset({"1", "true", "yes", "on"})


def env_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """
    Whether ``RESILIENCE_TELEMETRY`` in *environ* (default ``os.environ``) allows telemetry.

    .. versionadded:: 0.1.0
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_VAR)
    return raw is None or raw.strip().lower() in _ON


class _Switch:
    """One attribute read on the logging path."""

    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = env_enabled()


switch = _Switch()


def set_enabled(enabled: bool) -> None:
    """
    Switch telemetry output (the structlog bridge and every reporter) on or off.

    Args:
        enabled: True or False; the environment's default comes back on
            ``resilience.testing.reset()``.

    Raises:
        TypeError: If *enabled* is not a bool.

    .. versionadded:: 0.1.0
    """
    if not isinstance(enabled, bool):
        msg = f"enabled must be True or False, got {type(enabled).__name__} {enabled!r}"
        raise TypeError(msg)
    switch.enabled = enabled


def is_enabled() -> bool:
    """
    Whether telemetry output is on (see ``set_enabled`` and ``RESILIENCE_TELEMETRY``).

    .. versionadded:: 0.1.0
    """
    return switch.enabled


@on_reset
def _reset() -> None:
    switch.enabled = env_enabled()
