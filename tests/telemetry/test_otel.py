"""Tests for the OpenTelemetry adapter, with the SDK's in-memory exporters and explicit providers."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest


pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from resilience import circuit_breaker, retry, traced
from resilience.telemetry import counter, emit, gauge, measure
from resilience.telemetry.otel import OpenTelemetryAdapter, attach_opentelemetry
from resilience.testing import capture_events


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    adapter: OpenTelemetryAdapter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def points(self, name: str) -> list[tuple[dict[str, object], float]]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def make_otel(**options: object) -> Otel:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    adapter = attach_opentelemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        **options,  # type: ignore[arg-type]
    )
    return Otel(exporter, reader, tracer_provider, meter_provider, adapter)


@pytest.fixture(name="otel")
def _otel():
    """An adapter on private providers (never the global ones), shut down afterwards."""
    otel = make_otel()
    yield otel
    otel.adapter.detach()
    otel.tracer_provider.shutdown()
    otel.meter_provider.shutdown()


def flaky(failures: int, exc: type[Exception] = OSError):
    calls = []

    def f():
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"fail {len(calls)}")
        return "ok"

    return f


class TestImport:
    def test_optional(self):
        """Importing resilience and resilience.telemetry never imports opentelemetry."""
        code = (
            "import sys, resilience, resilience.telemetry\n"
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


class TestTracedSpans:
    def test_sync_call(self, otel, clock):
        """A traced call is one span, named by the traced name, lasting the measured duration."""

        @traced("db.query", log=False, attributes={"db": "main"})
        def query():
            clock.sleep(1.5)
            return 1

        with capture_events("resilience.trace.stop") as events:
            assert 1 == query()
        span = otel.span("db.query")
        assert 1_500_000_000 == span.end_time - span.start_time
        assert events[0].measurements["duration_ns"] == span.end_time - span.start_time
        assert StatusCode.UNSET == span.status.status_code
        assert "main" == span.attributes["db"]
        assert events[0].metadata["span_id"] == span.attributes["resilience.span_id"]
        assert span.parent is None

    def test_exception(self, otel, clock):
        """An exception sets status ERROR and is recorded on the span."""

        @traced("boom", log=False)
        def boom():
            clock.sleep(0.25)
            raise ValueError("bad input")

        with pytest.raises(ValueError, match="bad input"):
            boom()
        span = otel.span("boom")
        assert StatusCode.ERROR == span.status.status_code
        assert "ValueError: bad input" == span.status.description
        assert "ValueError" == span.attributes["error.type"]
        (recorded,) = span.events
        assert "exception" == recorded.name
        assert "bad input" == recorded.attributes["exception.message"]
        assert span.end_time == recorded.timestamp
        assert 250_000_000 == span.end_time - span.start_time

    def test_nested(self, otel):
        """Nested traced calls become child spans of one trace."""

        @traced("inner", log=False)
        def inner():
            return 1

        @traced("outer", log=False)
        def outer():
            return inner() + inner()

        outer()
        root = otel.span("outer")
        children = [s for s in otel.spans() if s.name == "inner"]
        assert 2 == len(children)
        assert all(root.context.span_id == parent_of(c) for c in children)
        assert all(root.context.trace_id == c.context.trace_id for c in children)

    @pytest.mark.anyio
    async def test_async_concurrent_tasks(self, otel):
        """Concurrent tasks each parent their own children, never each other's."""

        def job(i):
            @traced(f"inner{i}", log=False)
            async def inner():
                await asyncio.sleep(0)

            @traced(f"job{i}", log=False)
            async def run():
                await asyncio.sleep(0)
                await inner()
                await asyncio.sleep(0)
                await inner()

            return run()

        @traced("root", log=False)
        async def root():
            await asyncio.gather(job(1), job(2), job(3))

        await root()
        top = otel.span("root")
        for i in (1, 2, 3):
            job_span = otel.span(f"job{i}")
            assert top.context.span_id == parent_of(job_span)
            inners = [s for s in otel.spans() if s.name == f"inner{i}"]
            assert 2 == len(inners)
            assert all(job_span.context.span_id == parent_of(s) for s in inners)

    def test_threads(self, otel):
        """A thread with a copied context nests under the caller; one without starts a trace."""

        @traced("child", log=False)
        def child():
            return 1

        @traced("parent", log=False)
        def parent():
            with ThreadPoolExecutor(2) as pool:
                copied = pool.submit(contextvars.copy_context().run, child)
                copied.result()
                pool.submit(child).result()

        parent()
        top = otel.span("parent")
        copied, fresh = [s for s in otel.spans() if s.name == "child"]
        assert top.context.span_id == parent_of(copied)
        assert fresh.parent is None
        assert top.context.trace_id != fresh.context.trace_id

    def test_generator_pauses(self, otel):
        """Code run between a traced generator's items is not parented to the generator."""

        @traced("gen", log=False)
        def gen():
            yield 1
            yield 2

        @traced("work", log=False)
        def work():
            return 1

        @traced("consumer", log=False)
        def consumer():
            for _ in gen():
                work()

        consumer()
        top = otel.span("consumer")
        assert top.context.span_id == parent_of(otel.span("gen"))
        works = [s for s in otel.spans() if s.name == "work"]
        assert [top.context.span_id] * 2 == [parent_of(s) for s in works]

    def test_measure(self, otel):
        """measure() blocks become spans too, parenting traced calls inside them."""

        @traced("step", log=False)
        def step():
            return 1

        with measure("app.load", {"table": "users"}):
            step()
        block = otel.span("app.load")
        assert "users" == block.attributes["table"]
        assert block.context.span_id == parent_of(otel.span("step"))


class TestCurrentContext:
    def test_instrumented_code_nests(self, otel):
        """OpenTelemetry spans opened inside a traced call are its children; a root nests under theirs."""
        tracer = otel.tracer_provider.get_tracer("app")

        @traced("fetch", log=False)
        def fetch():
            with tracer.start_as_current_span("http.get"):
                pass

        with tracer.start_as_current_span("request"):
            fetch()
        request, fetched, http = otel.span("request"), otel.span("fetch"), otel.span("http.get")
        assert request.context.span_id == parent_of(fetched)
        assert fetched.context.span_id == parent_of(http)

    def test_set_current_off(self):
        """With set_current=False our spans never become OpenTelemetry's current span."""
        otel = make_otel(set_current=False)
        tracer = otel.tracer_provider.get_tracer("app")

        @traced("fetch", log=False)
        def fetch():
            with tracer.start_as_current_span("http.get"):
                pass

        fetch()
        assert otel.span("http.get").parent is None
        otel.adapter.detach()


class TestRetrySpans:
    def test_attempts_under_traced(self, otel, clock):
        """Each attempt is a child span of the traced call, numbered, with its outcome."""

        @traced("op", log=False)
        @retry(attempts=5)
        def op():
            return f()

        f = flaky(2)
        assert "ok" == op()
        top = otel.span("op")
        attempts = [s for s in otel.spans() if s.name == "retry.attempt"]
        assert [1, 2, 3] == [s.attributes["resilience.retry.attempt"] for s in attempts]
        assert ["raised", "raised", "returned"] == [
            s.attributes["resilience.retry.outcome"] for s in attempts
        ]
        assert ["OSError", "OSError", None] == [s.attributes.get("error.type") for s in attempts]
        assert [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET] == [
            s.status.status_code for s in attempts
        ]
        assert all(top.context.span_id == parent_of(s) for s in attempts)
        retries = [e for e in top.events if e.name == "resilience.retry.retry"]
        assert [1, 2] == [e.attributes["attempt"] for e in retries]
        assert "OSError: fail 1" == retries[0].attributes["reason"]
        assert clock.sleeps == [e.attributes["delay"] for e in retries]
        ((attributes, value),) = otel.points("resilience.retry.retries")
        assert 2 == value
        assert attributes["name"].endswith("<locals>.op")

    def test_traced_inside_attempts(self, otel, clock):
        """With @retry outside @traced, each traced call is a child of its attempt."""
        f = flaky(1)

        @retry(attempts=3)
        @traced("call", log=False)
        def call():
            return f()

        call()
        attempts = [s for s in otel.spans() if s.name == "retry.attempt"]
        calls = [s for s in otel.spans() if s.name == "call"]
        assert [a.context.span_id for a in attempts] == [parent_of(c) for c in calls]
        assert all(a.parent is None for a in attempts)

    @pytest.mark.anyio
    async def test_give_up_async(self, otel, clock):
        """An async retry that gives up records the give-up on the traced span and a counter."""

        @traced("op", log=False)
        @retry(attempts=2)
        async def op():
            await asyncio.sleep(0)
            raise OSError("down")

        with pytest.raises(OSError, match="down"):
            await op()
        top = otel.span("op")
        assert StatusCode.ERROR == top.status.status_code
        attempts = [s for s in otel.spans() if s.name == "retry.attempt"]
        assert [1, 2] == [s.attributes["resilience.retry.attempt"] for s in attempts]
        assert all(top.context.span_id == parent_of(s) for s in attempts)
        (gave_up,) = [e for e in top.events if e.name == "resilience.retry.give_up"]
        assert 2 == gave_up.attributes["attempts"]
        assert [1] == [v for _, v in otel.points("resilience.retry.give_ups")]


class TestMetrics:
    def test_counter(self, otel):
        """Counter events add up per attribute set; secrets are redacted, non-scalars dropped."""
        counter("app.hits", 2, {"route": "/a", "api_key": "s3cr3t", "obj": object()})
        counter("app.hits", 3, {"route": "/a", "api_key": "other"})
        counter("app.hits", 1, {"route": "/b"})
        points = sorted(otel.points("app.hits"), key=lambda p: str(p[0]))
        assert [
            ({"api_key": "[REDACTED]", "route": "/a"}, 5),
            ({"route": "/b"}, 1),
        ] == points

    def test_gauge(self, otel):
        """Gauge events keep the last value; credential-looking values are redacted."""
        gauge("app.queue", 3, {"pool": "main", "auth": "Bearer abc"})
        gauge("app.queue", 5, {"pool": "main", "auth": "Bearer abc"})
        assert [({"pool": "main", "auth": "[REDACTED]"}, 5)] == otel.points("app.queue")

    def test_breaker_state_changes(self, otel, clock):
        """Breaker state changes are counted with from/to attributes."""

        @circuit_breaker(name="api", failure_threshold=2)
        def call():
            raise OSError("x")

        for _ in range(2):
            with pytest.raises(OSError):
                call()
        points = otel.points("resilience.breaker.state_changes")
        assert [({"name": "api", "from": "closed", "to": "open"}, 1)] == points

    def test_waits_become_events_and_histograms(self, otel):
        """Permit and rate waits are span events on the enclosing span and histogram points."""

        @traced("guarded", log=False)
        def guarded():
            emit(
                "resilience.bounded.timeout",
                {"waited": 0.5, "queue_depth": 3.0},
                {"key": "k", "name": "pool", "limit": 2, "weight": 1},
            )

        guarded()
        (waited,) = otel.span("guarded").events
        assert "resilience.bounded.timeout" == waited.name
        assert 0.5 == waited.attributes["waited"]
        (metric,) = otel.reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        assert "resilience.bounded.wait" == metric.name
        assert "s" == metric.unit
        (histogram,) = metric.data.data_points
        assert {"name": "pool", "outcome": "timeout"} == dict(histogram.attributes)
        assert 0.5 == histogram.sum


class TestRedaction:
    def test_span_attributes_and_errors(self, otel):
        """Sensitive attributes and credential-looking error messages never reach a span."""

        @traced("login", log=False, attributes={"password": "hunter2", "user": "ann"})
        def login():
            raise PermissionError("Bearer abc.def")

        with pytest.raises(PermissionError):
            login()
        span = otel.span("login")
        assert "[REDACTED]" == span.attributes["password"]
        assert "ann" == span.attributes["user"]
        assert "PermissionError: [REDACTED]" == span.status.description
        (recorded,) = span.events
        assert "[REDACTED]" == recorded.attributes["exception.message"]
        assert "abc.def" not in str(recorded.attributes)


class TestDetach:
    def test_stops_mapping(self, otel):
        """After detach() no call becomes a span or a metric point."""

        @traced("f", log=False)
        def f():
            return 1

        otel.adapter.detach()
        otel.adapter.detach()
        f()
        counter("app.hits")
        assert [] == otel.spans()
        assert [] == otel.points("app.hits")
        assert not otel.adapter.attached

    def test_running_call_ends(self, otel):
        """A call running when detach() is called still ends its span, then the handler leaves."""
        from resilience.telemetry._bus import BUS

        @traced("inner", log=False)
        def inner():
            return 1

        @traced("f", log=False)
        def f():
            otel.adapter.detach()
            assert not otel.adapter.attached
            assert otel.adapter._handle.attached
            inner()

        f()
        assert ["f"] == [s.name for s in otel.spans()]
        assert not otel.adapter._handle.attached
        assert otel.adapter._handle not in BUS.subs

    def test_attached_mid_call(self):
        """A call that started before attaching is skipped, and the adapter stays attached."""
        holder = []

        @traced("f", log=False)
        @retry(attempts=2)
        def f():
            holder.append(make_otel())
            return 1

        f()
        otel = holder[0]
        assert [] == otel.spans()
        assert otel.adapter.attached
        otel.adapter.detach()

    def test_two_adapters(self, otel):
        """Two adapters map the same calls independently, each to its own provider."""
        other = make_otel()

        @traced("inner", log=False)
        def inner():
            return 1

        @traced("outer", log=False)
        def outer():
            return inner()

        outer()
        other.adapter.detach()
        for each in (otel, other):
            assert each.span("outer").context.span_id == parent_of(each.span("inner"))

    def test_context_manager(self):
        """Leaving a ``with`` block detaches."""
        with make_otel().adapter as adapter:
            assert adapter.attached
        assert not adapter.attached
