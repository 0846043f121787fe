"""
Telemetry: an event bus that every decorator reports to, and helpers for users' own code.

Attach a handler with ``attach(handler, events=None)``; it receives ``Event`` objects whose
``name`` starts with ``resilience.``.
"""

from resilience.telemetry._bus import Event, Handle, attach, emit


__all__ = ["Event", "Handle", "attach", "emit"]
