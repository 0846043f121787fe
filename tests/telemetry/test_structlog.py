"""The structlog bridge renders events as plain lines under any renderer."""

from __future__ import annotations


def test_exception_metadata_renders_with_console_renderer(capsys):
    """An exception in an event's metadata is logged as one line, even by ConsoleRenderer."""
    import structlog

    from resilience.telemetry import attach_structlog, emit

    structlog.configure(processors=[structlog.dev.ConsoleRenderer(colors=False)])
    try:
        handle = attach_structlog("resilience.test")
        emit(
            "resilience.test.failed",
            {},
            {"exception": ValueError("bad\nsecond line"), "outcome": KeyError("k")},
        )
        assert handle.attached
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().out
    assert "error='ValueError: bad'" in out
    assert "outcome=\"KeyError: 'k'\"" in out
