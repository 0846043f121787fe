"""Benchmark scenarios: what redaction costs per log line, with and without secrets in it."""

from __future__ import annotations

import io
import itertools

import structlog

from benchmarks._harness import Scenario
from resilience.telemetry._redact import is_sensitive, redact, scrub
from resilience.telemetry._structlog import log_event


_count = itertools.count()

CLEAN = (
    "Server error '503 Service Unavailable' for url 'https://api.example.test/v1/items?page=2'"
    "\nFor more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/503"
)
SECRET = (
    "Client error '401 Unauthorized' for url "
    "'https://api.example.test/v1/items?api_key=sk-abcdefghijklmnop0123&page=2'; "
    "the server echoed Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"
)


def _metadata(message: str) -> dict[str, object]:
    """A retry event's metadata, with a fresh exception (no cache can hide the cost)."""
    error = ConnectionError(f"{message} #{next(_count)}")
    return {
        "name": "client.fetch",
        "outcome": error,
        "reason": "ConnectionError",
        "server_delay": False,
    }


def _keys_only() -> object:
    """The v1 rule: look at the key names only, render the exception as text."""
    data = _metadata(CLEAN)
    return {
        k: "[REDACTED]" if is_sensitive(k) else (str(v) if isinstance(v, BaseException) else v)
        for k, v in data.items()
    }


def _redact_clean() -> object:
    return redact(_metadata(CLEAN), render=True)


def _redact_secret() -> object:
    return redact(_metadata(SECRET), render=True)


def _scrub_clean() -> str:
    return scrub(f"{CLEAN} #{next(_count)}")


def _scrub_secret() -> str:
    return scrub(f"{SECRET} #{next(_count)}")


_sink = io.StringIO()


def _quiet_structlog() -> object:
    """Lines rendered key=value into a buffer that is emptied after the scenario."""
    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=_sink),
        cache_logger_on_first_use=False,
    )

    def teardown() -> None:
        structlog.configure(**old)
        _sink.seek(0)
        _sink.truncate()

    return teardown


def _line_clean() -> None:
    _sink.seek(0)
    log_event("resilience.retry.retry", {"attempt": 1.0, "delay": 0.5}, _metadata(CLEAN))


def _line_secret() -> None:
    _sink.seek(0)
    log_event("resilience.retry.retry", {"attempt": 1.0, "delay": 0.5}, _metadata(SECRET))


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            title="redaction of one event's metadata",
            kind="sync",
            contenders={
                "keys only (the v1 rule)": _keys_only,
                "keys and values, no secret": _redact_clean,
                "keys and values, 3 secrets": _redact_secret,
                "scrub one 180-char message, no secret": _scrub_clean,
                "scrub one 190-char message, 3 secrets": _scrub_secret,
            },
            baseline="keys only (the v1 rule)",
            note=(
                "a retry event's metadata (name, reason, the exception) made fresh each call, "
                "so the cache of short strings never hides the cost of scrubbing its message"
            ),
        ),
        Scenario(
            title="redaction per structlog line",
            kind="sync",
            contenders={
                "log line, no secret": _line_clean,
                "log line, 3 secrets": _line_secret,
            },
            baseline="log line, no secret",
            note=(
                "one resilience.retry.retry line through log_event, rendered key=value into "
                "memory: the whole exit, redaction included"
            ),
            setup=_quiet_structlog,
        ),
    ]
