"""Tests for measure, counter and gauge."""

from __future__ import annotations

import math

import pytest

from resilience import traced
from resilience.telemetry import counter, current_span, gauge, measure
from resilience.testing import FakeClock, capture_events


class TestMeasure:
    def test_context_manager(self):
        """measure emits start and stop with the duration read from the clock."""
        clock = FakeClock()
        with capture_events("app") as events, measure("app.load", {"table": "t"}, clock=clock):
            clock.advance(1.5)
        assert ["app.load.start", "app.load.stop"] == [e.name for e in events]
        assert 1.5 == events[1].measurements["duration"]
        assert "t" == events[1].metadata["table"]

    def test_exception(self):
        """An exception leaving the block is emitted and propagates."""
        with capture_events("app") as events, pytest.raises(ZeroDivisionError):
            with measure("app.div"):
                1 / 0
        assert "app.div.exception" == events[-1].name
        assert "ZeroDivisionError" == events[-1].metadata["error_type"]

    def test_decorator_sync(self):
        """As a decorator, each call is measured."""

        @measure("app.f")
        def f(x):
            return x * 2

        with capture_events("app") as events:
            assert 4 == f(2)
            assert 6 == f(3)
        assert 4 == len(events)

    @pytest.mark.anyio
    async def test_decorator_async(self):
        """Async functions are measured around the await."""

        @measure("app.g")
        async def g():
            return 5

        with capture_events("app") as events:
            assert 5 == await g()
        assert ["app.g.start", "app.g.stop"] == [e.name for e in events]

    def test_span_parent(self):
        """A traced call inside measure names the measure's span as its parent."""

        @traced(log=False)
        def inner():
            return current_span()

        with measure("app.outer") as span:
            assert span.span_id == inner().parent_id

    def test_generator_rejected(self):
        """Generator functions are refused with a pointer to @traced."""

        def gen():
            yield 1

        with pytest.raises(TypeError, match="traced"):
            measure("app.gen")(gen)

    def test_bad_name(self):
        """An empty name is a ValueError naming the parameter."""
        with pytest.raises(ValueError, match="name"):
            measure("")


class TestCounterGauge:
    def test_counter(self):
        """counter emits a count."""
        with capture_events("app") as events:
            counter("app.hits", metadata={"route": "/"})
            counter("app.hits", 3)
        assert [1, 3] == [e.measurements["count"] for e in events]
        assert "/" == events[0].metadata["route"]

    def test_gauge(self):
        """gauge emits a value."""
        with capture_events("app") as events:
            gauge("app.queue", 12.5)
        assert 12.5 == events[0].measurements["value"]

    @pytest.mark.parametrize(
        ("value", "error"), [(math.nan, ValueError), ("1", TypeError), (True, TypeError)]
    )
    def test_bad_value(self, value, error):
        """Non-numbers and non-finite numbers are refused, naming the parameter."""
        with pytest.raises(error, match="value"):
            gauge("app.g", value)
