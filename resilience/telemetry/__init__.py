"""
Telemetry: an event bus that every decorator reports to, and helpers for users' own code.

Attach a handler with ``attach(handler, events=None)``; it receives ``Event`` objects whose
``name`` starts with ``resilience.``. ``attach_structlog()`` turns events into log lines,
``measure``/``counter``/``gauge`` emit users' own events, ``current_span()`` reads the trace
context, and a ``Reporter`` batches events to a backend for a session.
"""

from resilience import _exports
from resilience.telemetry._backends import HttpBackend
from resilience.telemetry._bus import Event, EventHandler, Handle, attach, detach, emit
from resilience.telemetry._metrics import counter, gauge, measure
from resilience.telemetry._redact import (
    REDACTED,
    add_pattern,
    add_sensitive,
    redact,
    scrub,
    sensitive_names,
)
from resilience.telemetry._reporter import Reporter
from resilience.telemetry._reporter_events import Batch, ReporterStats
from resilience.telemetry._rolling import NameMetrics, RollingMetrics
from resilience.telemetry._spans import Span, current_span
from resilience.telemetry._structlog import attach_structlog
from resilience.telemetry._switch import env_enabled, is_enabled, set_enabled
from resilience.telemetry._user_errors import find_user_error, is_user_error


__all__ = [
    "REDACTED",
    "Batch",
    "Event",
    "EventHandler",
    "Handle",
    "HttpBackend",
    "NameMetrics",
    "Reporter",
    "ReporterStats",
    "RollingMetrics",
    "Span",
    "add_pattern",
    "add_sensitive",
    "attach",
    "attach_structlog",
    "counter",
    "current_span",
    "detach",
    "emit",
    "env_enabled",
    "find_user_error",
    "gauge",
    "is_enabled",
    "is_user_error",
    "measure",
    "redact",
    "scrub",
    "sensitive_names",
    "set_enabled",
]


_exports.publish(__name__, globals())
