"""Tests for ``@traced``: events, durations, structlog lines and trace context."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
import structlog

from hypothesis import given
from hypothesis import strategies as st

from resilience import Backoff, TracedPolicy, retry, traced
from resilience.telemetry import current_span, measure, set_enabled
from resilience.testing import FakeClock, capture_events


class TestEvents:
    def test_sync_stop(self):
        """A successful call emits start then stop, with the name and a duration."""
        clock = FakeClock()

        @traced("db.query", clock=clock)
        def query():
            clock.advance(0.25)
            return 7

        with capture_events("resilience.trace") as events, structlog.testing.capture_logs():
            assert 7 == query()
        assert ["resilience.trace.start", "resilience.trace.stop"] == [e.name for e in events]
        assert 0.25 == events[1].measurements["duration"]
        assert 250_000_000 == events[1].measurements["duration_ns"]
        assert "db.query" == events[1].metadata["name"]

    def test_exception(self):
        """A raising call emits exception with the error, and the error propagates unchanged."""
        boom = ValueError("boom")

        @traced(log=False)
        def fail():
            raise boom

        with capture_events() as events, pytest.raises(ValueError) as info:
            fail()
        assert info.value is boom
        last = events[-1]
        assert "resilience.trace.exception" == last.name
        assert boom is last.metadata["exception"]
        assert "ValueError" == last.metadata["error_type"]
        assert last.measurements["duration"] >= 0

    def test_bare_uses_qualname(self):
        """Bare @traced names the span after the function."""

        @traced
        def work():
            return 1

        with capture_events() as events, structlog.testing.capture_logs():
            work()
        assert events[0].metadata["name"].endswith("test_bare_uses_qualname.<locals>.work")

    def test_handlers_run_before_return(self):
        """Start is handled before the body runs, stop before the call returns."""
        events = []

        @traced(log=False)
        def work():
            return len(events)

        with capture_events() as captured:
            events = captured
            assert 1 == work()
            assert 2 == len(captured)

    def test_attributes(self):
        """Policy attributes appear in every event's metadata."""

        @traced(log=False, attributes={"db": "main"})
        def work():
            return None

        with capture_events() as events:
            work()
        assert {"main"} == {e.metadata["db"] for e in events}

    @pytest.mark.anyio
    async def test_async(self):
        """Async functions are traced around the awaited call."""

        @traced("aio", log=False)
        async def work():
            await asyncio.sleep(0)
            return 3

        with capture_events() as events:
            assert 3 == await work()
        assert ["resilience.trace.start", "resilience.trace.stop"] == [e.name for e in events]

    def test_generator(self):
        """A generator's span covers the whole iteration and ends on exhaustion."""

        @traced(log=False)
        def items():
            yield 1
            yield 2

        with capture_events() as events:
            assert [1, 2] == list(items())
        assert ["resilience.trace.start", "resilience.trace.stop"] == [e.name for e in events]

    def test_generator_close(self):
        """Closing a traced generator early ends its span with a stop event."""

        @traced(log=False)
        def items():
            yield 1
            yield 2

        with capture_events() as events:
            gen = items()
            next(gen)
            gen.close()
        assert "resilience.trace.stop" == events[-1].name

    def test_generator_whose_close_raises(self):
        """A generator that raises while being closed ends its span with that exception."""

        @traced(log=False)
        def items():
            try:
                yield 1
            finally:
                raise OSError("cleanup failed")

        with capture_events() as events:
            gen = items()
            next(gen)
            with pytest.raises(OSError, match="cleanup failed"):
                gen.close()
        assert ["resilience.trace.start", "resilience.trace.exception"] == [e.name for e in events]
        assert "OSError" == events[-1].metadata["error_type"]
        assert current_span() is None

    @pytest.mark.anyio
    async def test_async_generator_close_and_throw(self):
        """An async generator's span is the generator's only: a throw passes in, a close ends it."""
        seen = []

        @traced("agen", log=False)
        async def items():
            while True:
                try:
                    yield current_span().name
                except KeyError as exc:
                    seen.append(exc)

        with capture_events() as events:
            agen = items()
            assert "agen" == await agen.__anext__()
            assert current_span() is None
            assert "agen" == await agen.athrow(KeyError("k"))
            await agen.aclose()
        assert 1 == len(seen)
        assert ["resilience.trace.start", "resilience.trace.stop"] == [e.name for e in events]
        assert current_span() is None

    @pytest.mark.anyio
    async def test_async_generator(self):
        """Async generators are traced across their iteration."""

        @traced(log=False)
        async def items():
            yield 1
            yield 2

        with capture_events() as events:
            assert [1, 2] == [x async for x in items()]
        assert "resilience.trace.stop" == events[-1].name


_trees = st.recursive(
    st.tuples(st.sampled_from(["traced", "measure"]), st.booleans(), st.booleans(), st.just(())),
    lambda children: st.tuples(
        st.sampled_from(["traced", "measure"]),
        st.booleans(),
        st.booleans(),
        st.lists(children, max_size=3).map(tuple),
    ),
    max_leaves=12,
)


class TestContext:
    def test_nested_parent(self):
        """A traced call inside another names the outer span as its parent, same trace."""

        @traced("inner", log=False)
        def inner():
            return current_span()

        @traced("outer", log=False)
        def outer():
            return current_span(), inner()

        outer_span, inner_span = outer()
        assert outer_span.span_id == inner_span.parent_id
        assert outer_span.trace_id == inner_span.trace_id
        assert outer_span.parent_id is None
        assert current_span() is None

    @pytest.mark.anyio
    async def test_across_awaits_and_tasks(self):
        """The span survives awaits, and concurrent tasks get their own spans."""

        @traced("child", log=False)
        async def child():
            await asyncio.sleep(0)
            return current_span()

        @traced("parent", log=False)
        async def parent():
            before = current_span()
            kids = await asyncio.gather(child(), child())
            assert before is current_span()
            return before, kids

        root, kids = await parent()
        assert {root.span_id} == {k.parent_id for k in kids}
        assert kids[0].span_id != kids[1].span_id

    def test_generator_does_not_leak(self):
        """Between items the consumer runs outside the generator's span."""

        @traced(log=False)
        def items():
            yield current_span()

        gen = items()
        inside = next(gen)
        assert inside is not None
        assert current_span() is None
        gen.close()

    def test_threads_with_copied_context(self):
        """A thread started with a copied context sees the span as parent."""
        found = []

        @traced("worker", log=False)
        def worker():
            found.append(current_span())

        @traced("main", log=False)
        def main():
            context = contextvars.copy_context()
            thread = threading.Thread(target=context.run, args=(worker,))
            thread.start()
            thread.join()
            return current_span()

        span = main()
        assert span.span_id == found[0].parent_id

    def test_current_span_is_one_object_per_call(self):
        """Reading the span twice in one call gives the same object, built on the first read."""

        @traced("one", log=False)
        def one():
            first = current_span()
            return first, current_span()

        first, second = one()
        assert first is second
        assert "one" == first.name
        assert current_span() is None

    def test_deep_nesting_reads_the_root_trace(self):
        """Hundreds of unread quiet spans deep, the innermost still names its parent and trace."""
        depth = 300
        seen = []

        @traced("deep", log=False)
        def dive(n):
            if n == 0:
                seen.append(current_span())
                return
            dive(n - 1)
            if n == depth:
                seen.append(current_span())

        dive(depth)
        inner, outer = seen
        assert outer.trace_id == inner.trace_id
        assert outer.parent_id is None
        assert inner.parent_id is not None
        assert inner.span_id != outer.span_id

    @given(tree=_trees)
    def test_ids_agree_however_spans_are_read(self, tree):
        """
        Quiet traced calls, ``measure`` blocks and reads in any order: one trace, each span's
        parent is the enclosing span, every id unique, and a span reads the same before and
        after its children (quiet spans are built only when read, from what was current).
        """
        found: list[tuple[object, object, list[object]]] = []

        def run(node, parent_index):
            kind, read_before, read_after, children = node
            index = len(found)
            reads: list[object] = []
            found.append((parent_index, None, reads))

            def body():
                if read_before:
                    reads.append(current_span())
                for child in children:
                    run(child, index)
                if read_after or not read_before:
                    reads.append(current_span())
                found[index] = (parent_index, reads[0], reads)

            if kind == "traced":
                traced(f"n{index}", log=False)(body)()
            else:
                with measure(f"n{index}"):
                    body()

        run(tree, None)
        assert current_span() is None
        spans = [span for _, span, _ in found]
        for parent_index, span, reads in found:
            assert all(read is span for read in reads)
            expected = None if parent_index is None else spans[parent_index].span_id
            assert expected == span.parent_id
        assert 1 == len({span.trace_id for span in spans})
        assert len(spans) == len({span.span_id for span in spans})
        assert all(len(s.span_id) == 16 and len(s.trace_id) == 32 for s in spans)

    def test_stacks_with_retry(self):
        """Traced outside retry sees one span around all attempts."""
        calls = []

        @traced(log=False)
        @retry(attempts=3, backoff=Backoff(base=0.0, max=0.0))
        def flaky():
            calls.append(current_span())
            if len(calls) < 3:
                raise OSError("again")
            return "ok"

        with capture_events("resilience.trace") as events:
            assert "ok" == flaky()
        assert 1 == len({c.span_id for c in calls})
        assert ["resilience.trace.start", "resilience.trace.stop"] == [e.name for e in events]


class TestStructlog:
    def test_lines(self):
        """Start and stop go to structlog with name, ids and duration."""

        @traced("svc.call")
        def work():
            return None

        with structlog.testing.capture_logs() as logs:
            work()
        assert ["resilience.trace.start", "resilience.trace.stop"] == [x["event"] for x in logs]
        assert ["debug", "info"] == [x["log_level"] for x in logs]
        assert "svc.call" == logs[1]["name"]
        assert logs[1]["duration"] >= 0
        assert logs[0]["span_id"] == logs[1]["span_id"]

    def test_attach_structlog_writes_each_line_once(self):
        """With attach_structlog on, a logging @traced still writes one line per event."""
        from resilience.telemetry import attach_structlog

        @traced("svc.once")
        def work():
            return None

        @traced("svc.once_fail")
        def fail():
            raise KeyError("k")

        @traced("svc.quiet", log=False)
        def quiet():
            return None

        handle = attach_structlog(level="debug")
        try:
            with structlog.testing.capture_logs() as logs:
                work()
                with pytest.raises(KeyError):
                    fail()
                quiet()
        finally:
            handle.detach()
        events = [(x["event"], x["name"]) for x in logs]
        assert [
            ("resilience.trace.start", "svc.once"),
            ("resilience.trace.stop", "svc.once"),
            ("resilience.trace.start", "svc.once_fail"),
            ("resilience.trace.exception", "svc.once_fail"),
            ("resilience.trace.start", "svc.quiet"),
            ("resilience.trace.stop", "svc.quiet"),
        ] == events

    def test_exception_level(self):
        """The exception line is logged at error level."""

        @traced
        def fail():
            raise KeyError("k")

        with structlog.testing.capture_logs() as logs, pytest.raises(KeyError):
            fail()
        assert "error" == logs[-1]["log_level"]
        assert "KeyError" == logs[-1]["error_type"]

    def test_secrets_redacted(self):
        """Sensitive attributes never reach the log line."""

        @traced(attributes={"api_key": "sk-123", "authorization": "Bearer x"})
        def work():
            return None

        with structlog.testing.capture_logs() as logs:
            work()
        assert {"[REDACTED]"} == {logs[1]["api_key"], logs[1]["authorization"]}

    def test_disabled(self):
        """set_enabled(False) silences the lines but not the bus."""

        @traced
        def work():
            return None

        set_enabled(False)
        with structlog.testing.capture_logs() as logs, capture_events() as events:
            work()
        assert [] == logs
        assert 2 == len(events)

    def test_json_renderer(self):
        """With a JSON renderer configured, lines come out as JSON."""
        import io
        import json

        out = io.StringIO()
        previous = structlog.get_config()
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
            logger_factory=structlog.PrintLoggerFactory(out),
        )
        try:

            @traced("jsonable")
            def work():
                return None

            work()
        finally:
            structlog.configure(**previous)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert "resilience.trace.stop" == lines[-1]["event"]
        assert "jsonable" == lines[-1]["name"]


class TestPolicy:
    def test_bad_level(self):
        """An unknown level is a ValueError naming the field."""
        with pytest.raises(ValueError, match="TracedPolicy.level"):
            TracedPolicy(level="loud")

    def test_bad_name(self):
        """A non-string name is a TypeError naming the field."""
        with pytest.raises(TypeError, match="TracedPolicy.name"):
            TracedPolicy(name=3)

    def test_from_dict(self):
        """from_dict builds a policy and rejects unknown keys."""
        assert TracedPolicy(name="x", log=False) == TracedPolicy.from_dict(
            {"name": "x", "log": False}
        )
        with pytest.raises(ValueError, match="nope"):
            TracedPolicy.from_dict({"nope": 1})

    def test_positional_policy(self):
        """A policy given positionally is used as is."""

        @traced(TracedPolicy(name="p", log=False))
        def work():
            return None

        with capture_events() as events:
            work()
        assert "p" == events[0].metadata["name"]

    def test_name_twice(self):
        """Giving the name both ways is an error."""
        with pytest.raises(TypeError, match="twice"):
            traced("a", name="b")


def test_filtered_stops_but_logged_failures():
    """With structlog filtering below warning, stops are not logged but failures still are."""
    import logging

    import structlog

    from structlog.testing import LogCapture

    from resilience import traced

    capture = LogCapture()
    structlog.configure(
        processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    try:

        @traced("quiet")
        def ok() -> int:
            return 1

        @traced("loud")
        def boom() -> None:
            raise ValueError("nope")

        assert 1 == ok()
        with pytest.raises(ValueError, match="nope"):
            boom()
    finally:
        structlog.reset_defaults()
    assert [("resilience.trace.exception", "error")] == [
        (e["event"], e["log_level"]) for e in capture.entries
    ]
    assert "loud" == capture.entries[0]["name"]


class TestTracedPolicyValidation:
    @pytest.mark.parametrize(
        ("fields", "error", "match"),
        [
            ({"name": 3}, TypeError, r"TracedPolicy\.name must be a string or None"),
            ({"name": ""}, ValueError, r"TracedPolicy\.name must be a non-empty string"),
            ({"level": "loud"}, ValueError, r"TracedPolicy\.level must be one of"),
            ({"log": "yes"}, TypeError, r"TracedPolicy\.log must be True or False"),
            ({"attributes": [1]}, TypeError, r"TracedPolicy\.attributes must be a mapping"),
            (
                {"attributes": {1: "x"}},
                TypeError,
                r"TracedPolicy\.attributes must have string keys",
            ),
            ({"clock": object()}, TypeError, r"TracedPolicy\.clock must provide monotonic"),
        ],
    )
    def test_bad_values_name_the_field(self, fields, error, match):
        """Bad TracedPolicy values fail when built, naming the field."""
        from resilience import TracedPolicy

        with pytest.raises(error, match=match):
            TracedPolicy(**fields)


class TestTracedGeneratorControl:
    def test_close_and_throw_end_the_span(self):
        """Closing or throwing into a traced generator ends its span with stop or exception."""
        from resilience import traced
        from resilience.testing import capture_events

        @traced("gen", log=False)
        def numbers():
            try:
                yield 1
                yield 2
            except KeyError:
                yield "caught"

        with capture_events("resilience.trace") as events:
            gen = numbers()
            assert 1 == next(gen)
            gen.close()
            gen = numbers()
            next(gen)
            assert "caught" == gen.throw(KeyError())
            with pytest.raises(StopIteration):
                next(gen)
        names = [e.name for e in events]
        assert 2 == names.count("resilience.trace.start")
        assert 2 == names.count("resilience.trace.stop")

    @pytest.mark.anyio
    async def test_async_close_and_throw(self):
        """The same for async generators: aclose and athrow end the span."""
        from resilience import traced
        from resilience.testing import capture_events

        @traced("agen", log=False)
        async def numbers():
            try:
                yield 1
                yield 2
            except KeyError:
                yield "caught"

        with capture_events("resilience.trace") as events:
            agen = numbers()
            assert 1 == await agen.__anext__()
            await agen.aclose()
            agen = numbers()
            await agen.__anext__()
            assert "caught" == await agen.athrow(KeyError())
            with pytest.raises(StopAsyncIteration):
                await agen.__anext__()
        names = [e.name for e in events]
        assert 2 == names.count("resilience.trace.stop")
