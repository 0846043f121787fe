"""
The structlog bridge: events become log lines on structlog's ``resilience`` logger.

Lines look like the user's structlog is configured to make them (key=value, JSON, or the
standard library's handlers). Metadata is redacted first (keys and values, exception
messages included), and nothing is written while
telemetry is switched off (``set_enabled(False)`` or ``RESILIENCE_TELEMETRY=0``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from resilience._validate import check_choice
from resilience.telemetry._bus import Event, Handle, attach
from resilience.telemetry._redact import redact, scrub_exception
from resilience.telemetry._switch import switch


__all__ = ["LEVELS", "attach_structlog", "log_event", "logger"]

LEVELS = ("debug", "info", "warning", "error", "critical")
_NUMERIC = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

#: Keys structlog itself uses; an event's own keys of these names get a trailing underscore.
_RESERVED = frozenset({"event", "level", "logger", "timestamp", "exc_info"})

logger = structlog.get_logger("resilience")

# A bound logger per structlog configuration: the lazy proxy would re-bind on every line,
# and a filtered level lets us skip redaction entirely.
_cache: list[tuple[tuple[object, ...], Any]] = [((), None)]


def _bound() -> Any:
    config = structlog.get_config()
    key = (
        id(config["processors"]),
        config["wrapper_class"],
        config["logger_factory"],
        config["context_class"],
    )
    cached_key, bound = _cache[0]
    if cached_key != key or bound is None:
        bound = logger.bind()
        _cache[0] = (key, bound)
    return bound


def _fields(measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> dict[str, Any]:
    # structlog's renderers treat exception objects (and the "exception" key) as tracebacks
    # to format; an event's outcome is context, so it is logged as one short line, and that
    # line, like every other value, is scrubbed of secrets on its way out.
    if metadata:
        shown = {
            key: _one_line(value) if isinstance(value, BaseException) else value
            for key, value in metadata.items()
        }
        fields = redact(shown, render=True)
    else:
        fields = {}
    fields.update(measurements)
    for key in _RESERVED.intersection(fields):
        fields[f"{key}_"] = fields.pop(key)
    if "exception" in fields:
        fields["error"] = fields.pop("exception")
    return fields


def _one_line(exc: BaseException, limit: int = 120) -> str:
    lines = scrub_exception(exc).splitlines()
    text = lines[0] if lines else type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _never(level: str) -> bool:
    return False


def _always(level: str) -> bool:
    return True


def level_check() -> Callable[[str], bool]:
    """
    Return ``level -> bool``: whether a line at that level would be written now.

    One look at the switch and at structlog's configuration, then as many levels as needed.
    """
    if not switch.enabled:
        return _never
    enabled_for = getattr(_bound(), "is_enabled_for", None)
    if enabled_for is None:
        return _always
    return lambda level: bool(enabled_for(_NUMERIC[level]))


def logs_at(level: str) -> bool:
    """Whether a line at *level* would be written (telemetry on, structlog not filtering it)."""
    return level_check()(level)


def log_event(
    name: str,
    measurements: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    level: str = "info",
) -> None:
    """
    Write one line named *name* at *level*, with measurements and redacted metadata as keys.

    .. versionadded:: 0.1.0
    """
    if not switch.enabled:
        return
    bound = _bound()
    enabled_for = getattr(bound, "is_enabled_for", None)
    if enabled_for is not None and not enabled_for(_NUMERIC[level]):
        return
    getattr(bound, level)(name, **_fields(measurements or {}, metadata or {}))


def _level_for(name: str, default: str) -> str:
    if name.endswith((".exception", ".give_up", ".handler_detached", ".dropped")):
        return "warning"
    return default


def attach_structlog(
    events: Iterable[str] | str | None = "resilience.", level: str = "info"
) -> Handle:
    """
    Log every event on the bus (or those starting with *events*) through structlog.

    Exception and give-up events are logged at ``warning`` at least; the rest at *level*.
    An event whose layer already wrote its line (``Event.logged``, as ``@traced`` does with
    ``log=True``) is not written again.

    Args:
        events: Name prefixes to log (None: every event).
        level: One of ``"debug"``, ``"info"``, ``"warning"``, ``"error"``, ``"critical"``.

    Returns:
        The bus ``Handle``; ``detach()`` stops the logging.

    Raises:
        ValueError: If *level* is not a level name.

    .. versionadded:: 0.1.0
    """
    check_choice("", "level", level, LEVELS)
    base = LEVELS.index(level)

    def handler(event: Event) -> None:
        if event.logged:  # the emitting layer wrote this line itself
            return
        chosen = _level_for(event.name, level)
        log_event(
            event.name, event.measurements, event.metadata, LEVELS[max(base, LEVELS.index(chosen))]
        )

    return attach(handler, events)
