"""
What a reporter sends: the ``Batch`` and ``ReporterStats`` types and the event payloads.

``jsonable`` turns event data into JSON-ready values, ``exception_fields`` shapes a reported
exception (a ``user_error`` warning or an ``UNHANDLED_EXCEPTION``), and ``process_id`` is the
per-process uuid every batch carries (made again after a fork). Pure data: no queue, no thread.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import uuid

from collections.abc import Iterable, Mapping
from typing import Any

from resilience.telemetry._redact import redact, scrub, scrub_exception
from resilience.telemetry._user_errors import find_user_error, status_of


__all__ = ["SEVERITIES", "Batch", "ReporterStats", "exception_fields", "jsonable", "process_id"]

SEVERITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def jsonable(value: Any, depth: int = 0) -> Any:
    """Return *value* as JSON-ready data: exceptions as ``"Type: message"``, others by repr."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if depth > 8:
        return repr(value)[:200]
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    return repr(value)[:200]


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """
    What a backend receives: up to ``batch_size`` events of one session.

    Attributes:
        session_id: The reporter's session.
        process_id: A uuid made once per process (again after a fork).
        events: JSON-ready event dicts (``event``, ``event_id``, ``event_session_index``,
            ``severity``, ``timestamp`` and the type's own fields).
        dropped: Events lost to a full queue since the previous batch (also reported as a
            last ``resilience.telemetry.dropped`` event with ``{"count": dropped}``).
        platform: ``platform.system()``.
        sdk_version: This package's version.

    .. versionadded:: 0.1.0
    """

    session_id: str
    process_id: str
    events: tuple[dict[str, Any], ...]
    dropped: int = 0
    platform: str = dataclasses.field(default_factory=platform.system)
    sdk_version: str = "0.1.0"

    def to_dict(self) -> dict[str, Any]:
        """Return the batch as a JSON-ready dict."""
        return {
            "session_id": self.session_id,
            "process_id": self.process_id,
            "events": list(self.events),
            "dropped": self.dropped,
            "platform": self.platform,
            "sdk_version": self.sdk_version,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ReporterStats:
    """
    A reporter's accounting: ``accepted == sent + failed + queued`` at every moment.

    ``queued`` counts the events waiting and those being sent (or retried); a batch's
    dropped-events notice is not an accepted event and is counted nowhere but ``overflow``.

    .. versionadded:: 0.1.0
    """

    accepted: int
    queued: int
    sent: int
    failed: int
    overflow: int
    batches: int
    send_errors: int


_process: list[tuple[int, str]] = [(os.getpid(), str(uuid.uuid4()))]


def process_id() -> str:
    """Return this process's uuid, made again after a fork."""
    pid, ident = _process[0]
    if pid != os.getpid():  # forked: a new process, a new id
        pid, ident = _process[0] = (os.getpid(), str(uuid.uuid4()))
    return ident


def exception_fields(
    exc: BaseException, severity: str, sensitive: Iterable[str]
) -> tuple[str, str, dict[str, Any]]:
    """
    Return the event kind, severity and fields reporting *exc*.

    A user error (per ``find_user_error``) becomes a ``user_error`` generic event at WARNING
    with the redacted type, message, status and body; anything else an ``UNHANDLED_EXCEPTION``
    at *severity* with its traceback. Messages and tracebacks are scrubbed of secrets.
    """
    culprit = find_user_error(exc)
    if culprit is not None:
        data: dict[str, Any] = {"error_type": type(exc).__name__}
        message = _message(exc)
        if message:
            data["message"] = message
        code = status_of(culprit)
        if code is not None:
            data["status_code"] = code
        body = getattr(culprit, "body", None)
        if body:
            data["body"] = body
        clean = jsonable(redact(data, sensitive, render=True))
        return "GENERIC_EVENT", "WARNING", {"event_name": "user_error", "event_data": clean}
    text = None
    if exc.__traceback__ is not None:
        text = scrub_exception(exc, tb=True, sensitive=sensitive)
    return (
        "UNHANDLED_EXCEPTION",
        severity,
        {
            "error_type": type(exc).__name__,
            "error_message": scrub(_message(exc), sensitive),
            "traceback": text,
        },
    )


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the report
        return "<unprintable>"
