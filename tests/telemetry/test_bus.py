"""Tests for the event bus: attach, detach, routing and handler isolation."""

from __future__ import annotations

import threading

import structlog

from resilience.telemetry import Event, attach, detach, emit
from resilience.telemetry._bus import BUS


class TestBus:
    def test_prefix_routing(self):
        """A handler gets only the events whose names start with its prefixes."""
        got = []
        attach(got.append, ["resilience.retry", "resilience.trace.stop"])
        emit("resilience.retry.retry", {"delay": 1.0}, {"name": "f"})
        emit("resilience.trace.start")
        emit("resilience.trace.stop")
        assert ["resilience.retry.retry", "resilience.trace.stop"] == [e.name for e in got]

    def test_detach(self):
        """Detached handlers receive nothing, and detaching twice is harmless."""
        got = []
        handle = attach(got.append)
        detach(handle)
        handle.detach()
        emit("resilience.x")
        assert [] == got
        assert not handle.attached
        assert [] == BUS.live

    def test_route_cache_follows_attach(self):
        """A handler attached after a name was routed still receives it."""
        emit("resilience.a")
        got = []
        attach(got.append)
        emit("resilience.a")
        assert 1 == len(got)

    def test_raising_handler_detached_and_logged(self):
        """A raising handler is detached and logged; other handlers still get the event."""
        got = []

        def broken(event):
            raise RuntimeError("handler bug")

        attach(broken)
        attach(got.append)
        with structlog.testing.capture_logs() as logs:
            emit("resilience.a")
            emit("resilience.b")
        assert ["resilience.a", "resilience.b"] == [e.name for e in got]
        assert ["resilience.telemetry.handler_detached"] == [x["event"] for x in logs]
        assert "RuntimeError: handler bug" == logs[0]["error"]

    def test_event_copies_mappings(self):
        """The event holds copies: the emitter may reuse its dicts."""
        got: list[Event] = []
        attach(got.append)
        data = {"k": 1}
        emit("resilience.a", None, data)
        data["k"] = 2
        assert {"k": 1} == got[0].metadata
        assert got[0].monotonic_ns > 0

    def test_threads(self):
        """Concurrent attach, detach and emit lose no event for a handler attached throughout."""
        got = []
        lock = threading.Lock()

        def keep(event):
            with lock:
                got.append(event)

        attach(keep, "resilience.t")

        def churn():
            for _ in range(200):
                attach(lambda e: None, "resilience.other").detach()

        def fire():
            for _ in range(500):
                emit("resilience.t")

        threads = [
            threading.Thread(target=churn),
            threading.Thread(target=fire),
            threading.Thread(target=fire),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 1000 == len(got)
