"""
OpenTelemetry for resilience: traced calls and retry attempts as spans, events as metrics.

Needs ``opentelemetry-api`` (``pip install "resilience[otel]"``); importing ``resilience``
or ``resilience.telemetry`` never imports it. ``attach_opentelemetry()`` subscribes one
handler to the event bus and maps:

- ``resilience.trace.start``/``.stop``/``.exception`` (``@traced``) and ``measure``'s
  ``<name>.start``/``.stop``/``.exception`` to one span per call, named by the traced name,
  from the start event's wall time to that time plus the measured ``duration_ns``, with
  status ERROR and the exception recorded on ``.exception``;
- ``resilience.retry.attempt.start``/``.stop`` to a ``retry.attempt`` span per attempt;
- ``retry``/``give_up``, breaker state changes and rejections, rate waits and rejections,
  permit waits and timeouts to metrics and to span events on the enclosing span (ours, or
  else OpenTelemetry's current span, such as a request's);
- ``counter()`` events (``{"count": n}``) to a Counter and ``gauge()`` events
  (``{"value": v}``) to a Gauge named by the event, the metadata as attributes.

Parenting follows our own trace context, not OpenTelemetry's: a span's parent is the span
of the call that our events name as its parent (``parent_id``), or the innermost retry
attempt running inside that call in the same context. Our ids live in a context variable
that ``@traced`` enters and leaves exactly around the traced code (also across a traced
generator's pauses), and that asyncio tasks and ``contextvars.copy_context()`` threads
inherit; so concurrent tasks never borrow each other's parents, and a thread started
without a copied context starts a new trace in both worlds. A root call (no parent of
ours) becomes a child of the current OpenTelemetry span, such as a web framework's
request span. With *set_current* (the default) each span is also made OpenTelemetry's
current span while the call runs, so spans of OpenTelemetry-instrumented code inside a
traced call (HTTP clients, databases) nest under it; inside a traced *generator*, that
span stays current in the consumer's code between items too.

Every attribute goes through ``resilience.telemetry.redact``; only scalar values are kept,
and metric attributes leave out per-call ids.
"""

from __future__ import annotations

import threading

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from resilience.telemetry._bus import Event, attach
from resilience.telemetry._redact import redact, scrub_exception
from resilience.telemetry._spans import current_span


__all__ = ["OpenTelemetryAdapter", "attach_opentelemetry"]

_SCOPE = "resilience"
_IDS = frozenset({"trace_id", "span_id", "parent_id"})
#: Keys that are the span itself (its name, ids, the error it records), not attributes.
_SPAN_OWN = frozenset({"name", *_IDS, "exception", "error_type", "error"})

Record = Callable[[float, Mapping[str, AttributeValue]], None]

#: Library events that become a span event on the enclosing span and a metric point:
#: event -> (instrument kind, metric name, measurement recorded, attribute keys, fixed ones).
_DERIVED: dict[str, tuple[str, str, str | None, tuple[str, ...], dict[str, str]]] = {
    "resilience.retry.retry": ("counter", "resilience.retry.retries", None, ("name",), {}),
    "resilience.retry.give_up": ("counter", "resilience.retry.give_ups", None, ("name",), {}),
    "resilience.breaker.state_change": (
        "counter",
        "resilience.breaker.state_changes",
        None,
        ("name", "from", "to"),
        {},
    ),
    "resilience.breaker.rejected": (
        "counter",
        "resilience.breaker.rejections",
        None,
        ("name", "state"),
        {},
    ),
    "resilience.rate.wait": ("histogram", "resilience.rate.wait", "wait", ("name",), {}),
    "resilience.rate.rejected": ("counter", "resilience.rate.rejections", None, ("name",), {}),
    "resilience.bounded.wait": (
        "histogram",
        "resilience.bounded.wait",
        "waited",
        ("name",),
        {"outcome": "acquired"},
    ),
    "resilience.bounded.timeout": (
        "histogram",
        "resilience.bounded.wait",
        "waited",
        ("name",),
        {"outcome": "timeout"},
    ),
}


def _version() -> str | None:
    try:
        return version("resilience")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return None


def _scalars(data: Mapping[str, Any], skip: frozenset[str]) -> dict[str, AttributeValue]:
    """Redacted metadata reduced to what OpenTelemetry attributes can hold: scalars."""
    return {
        key: value
        for key, value in redact(data).items()
        if key not in skip and isinstance(value, str | bool | int | float)
    }


def _duration_ns(event: Event) -> int:
    measured = event.measurements
    exact = measured.get("duration_ns")
    return int(exact) if exact is not None else round(measured.get("duration", 0.0) * 1e9)


class _Open:
    """One span we started and have not ended, linked to the one open around it."""

    __slots__ = (
        "attempt",
        "ended",
        "inner_scope",
        "otel_token",
        "outer",
        "span",
        "start_ns",
        "token",
    )

    def __init__(
        self, span: Span, start_ns: int, inner_scope: str | None, attempt: int, outer: _Open | None
    ) -> None:
        self.span = span
        self.start_ns = start_ns
        #: The span id our events give to calls made inside this one: its own for a traced
        #: call, the enclosing traced call's for an attempt (attempts are not our spans).
        self.inner_scope = inner_scope
        self.attempt = attempt  # the attempt number (from 1), or 0 for a call
        self.outer = outer
        self.ended = False
        self.token: Token[_Open | None] | None = None
        self.otel_token: Token[otel_context.Context] | None = None


class OpenTelemetryAdapter:
    """
    The bus handler ``attach_opentelemetry`` returns; ``detach()`` stops the mapping.

    Calls already running when it is detached still end their spans (their stop events are
    still taken), then the handler leaves the bus; nothing new is mapped after ``detach()``.

    .. versionadded:: 0.1.0
    """

    __module__ = "resilience.telemetry.otel"

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        events: Iterable[str] | str | None,
        set_current: bool,
    ) -> None:
        self.set_current = set_current
        self._tracer = trace.get_tracer(_SCOPE, _version(), tracer_provider=tracer_provider)
        self._meter = get_meter(_SCOPE, _version() or "", meter_provider=meter_provider)
        self._lock = threading.Lock()
        self._spans: dict[str, _Open] = {}  # our span id -> its open OpenTelemetry span
        self._open = 0  # open spans, attempts included
        self._closing = False
        self._instruments: dict[tuple[str, str], Record] = {}
        # One variable per adapter: two adapters' records never interleave in one chain.
        self._innermost: ContextVar[_Open | None] = ContextVar(
            f"resilience_otel_{id(self):x}", default=None
        )
        self._handle = attach(self, events)

    # -- the handle -------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether new calls are still mapped."""
        return not self._closing and self._handle.attached

    def detach(self) -> None:
        """Stop mapping new calls; running calls still end their spans (twice is harmless)."""
        with self._lock:
            self._closing = True
            idle = self._open == 0
        if idle:
            self._handle.detach()

    def __enter__(self) -> OpenTelemetryAdapter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def __repr__(self) -> str:
        return f"<OpenTelemetryAdapter attached={self.attached} open_spans={self._open}>"

    # -- dispatch ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Map one bus event (the bus calls this synchronously, in the emitting context)."""
        name = event.name
        if name in ("resilience.trace.stop", "resilience.trace.exception"):
            self._end_call(event)
        elif name == "resilience.retry.attempt.stop":
            self._end_attempt(event)
        elif self._closing:
            if name.endswith((".stop", ".exception")) and "span_id" in event.metadata:
                self._end_call(event)
        elif name == "resilience.trace.start":
            self._start_call(event, str(event.metadata.get("name", "traced")))
        elif name == "resilience.retry.attempt.start":
            self._start_attempt(event)
        elif name in _DERIVED:
            self._derived(event)
        elif "span_id" in event.metadata and "trace_id" in event.metadata:
            if name.endswith(".start"):  # measure()
                self._start_call(event, name.removesuffix(".start"))
            elif name.endswith((".stop", ".exception")):
                self._end_call(event)
        elif event.measurements.keys() == {"count"}:
            self._record("counter", name, event.measurements["count"], event.metadata)
        elif event.measurements.keys() == {"value"}:
            self._record("gauge", name, event.measurements["value"], event.metadata)

    # -- spans ------------------------------------------------------------------------------

    def _parent(self, scope: str | None) -> _Open | None:
        """The open span a call inside our span *scope* belongs to, or None for a root."""
        record = self._innermost.get()
        while record is not None:  # innermost first: an attempt inside *scope* wins
            if not record.ended and record.inner_scope == scope:
                return record
            record = record.outer
        return None if scope is None else self._spans.get(scope)

    def _open_span(
        self, name: str, event: Event, scope: str | None, attempt: int, inner_scope: str | None
    ) -> _Open | None:
        with self._lock:  # counted before detach() can see us idle, or not opened at all
            if self._closing:
                return None
            self._open += 1
        parent = self._parent(scope)
        start_ns = int(event.time * 1e9)
        span = self._tracer.start_span(
            name,
            context=None if parent is None else trace.set_span_in_context(parent.span),
            start_time=start_ns,
        )
        record = _Open(span, start_ns, inner_scope, attempt, self._innermost.get())
        record.token = self._innermost.set(record)
        if self.set_current:
            record.otel_token = otel_context.attach(trace.set_span_in_context(span))
        return record

    def _close(self, record: _Open, event: Event, failed: bool) -> None:
        record.ended = True
        end_ns = record.start_ns + _duration_ns(event)
        span = record.span
        if failed:
            exc = event.metadata.get("exception")
            error_type = str(event.metadata.get("error_type", type(exc).__name__))
            span.set_attribute("error.type", error_type)
            message = str(exc) if exc is not None else str(event.metadata.get("error", ""))
            clean = str(redact({"error": message})["error"])
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {clean}"))
            if isinstance(exc, BaseException):
                # the SDK would record str(exc) and the raw traceback: both go out scrubbed
                extra: dict[str, AttributeValue] = {
                    "exception.message": clean,
                    "exception.stacktrace": scrub_exception(exc, tb=True),
                }
                span.record_exception(exc, extra, timestamp=end_ns, escaped=True)
        span.end(end_time=end_ns)
        try:
            if record.token is not None:
                self._innermost.reset(record.token)
        except ValueError:  # ended in another context (a generator closed elsewhere)
            pass  # OpenTelemetry's token would fail the same way: leave both alone
        else:
            if record.otel_token is not None:
                otel_context.detach(record.otel_token)
        with self._lock:
            self._open -= 1
            drained = self._closing and self._open == 0
        if drained:
            self._handle.detach()

    def _start_call(self, event: Event, name: str) -> None:
        metadata = event.metadata
        span_id = str(metadata["span_id"])
        parent_id = metadata.get("parent_id")
        record = self._open_span(
            name, event, None if parent_id is None else str(parent_id), 0, span_id
        )
        if record is None:
            return
        record.span.set_attributes(
            {
                "resilience.trace_id": str(metadata.get("trace_id")),
                "resilience.span_id": span_id,
                **_scalars(metadata, _SPAN_OWN),
            }
        )
        with self._lock:
            self._spans[span_id] = record

    def _end_call(self, event: Event) -> None:
        with self._lock:
            record = self._spans.pop(str(event.metadata.get("span_id")), None)
        if record is not None:  # None: it started before we attached
            self._close(record, event, event.name.endswith(".exception"))

    def _start_attempt(self, event: Event) -> None:
        enclosing = current_span()
        scope = None if enclosing is None else enclosing.span_id
        number = int(event.metadata.get("attempt", event.measurements.get("attempt", 0)))
        record = self._open_span("retry.attempt", event, scope, number, scope)
        if record is not None:
            record.span.set_attributes(
                {
                    "resilience.name": str(event.metadata.get("name")),
                    "resilience.retry.attempt": number,
                }
            )

    def _end_attempt(self, event: Event) -> None:
        number = int(event.metadata.get("attempt", 0))
        record = self._innermost.get()
        while record is not None and (record.ended or record.attempt != number):
            record = record.outer
        if record is None:
            return  # it started before we attached
        outcome = str(event.metadata.get("outcome", "returned"))
        record.span.set_attribute("resilience.retry.outcome", outcome)
        self._close(record, event, outcome == "raised")

    # -- span events and metrics ------------------------------------------------------------

    def _derived(self, event: Event) -> None:
        enclosing = current_span()
        record = self._parent(None if enclosing is None else enclosing.span_id)
        span = record.span if record is not None else trace.get_current_span()
        if span.is_recording():
            attributes: dict[str, AttributeValue] = dict(event.measurements)
            attributes.update(_scalars(event.metadata, _IDS))
            span.add_event(event.name, attributes, timestamp=int(event.time * 1e9))
        kind, metric, measured, keys, fixed = _DERIVED[event.name]
        amount = 1 if measured is None else event.measurements.get(measured, 0.0)
        chosen = {key: event.metadata[key] for key in keys if key in event.metadata}
        self._record(kind, metric, amount, {**chosen, **fixed})

    def _record(self, kind: str, name: str, amount: float, metadata: Mapping[str, Any]) -> None:
        record = self._instruments.get((kind, name))
        if record is None:
            with self._lock:
                record = self._instruments.get((kind, name))
                if record is None:
                    record = self._instrument(kind, name)
                    self._instruments[kind, name] = record
        record(amount, _scalars(metadata, _IDS))

    def _instrument(self, kind: str, name: str) -> Record:
        meter = self._meter
        if kind == "counter":
            return meter.create_counter(name).add
        if kind == "gauge":
            return meter.create_gauge(name).set
        return meter.create_histogram(name, unit="s").record


def attach_opentelemetry(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    events: Iterable[str] | str | None = None,
    set_current: bool = True,
) -> OpenTelemetryAdapter:
    """
    Report resilience's events to OpenTelemetry: spans for calls and attempts, metrics.

    Example::

        from resilience.telemetry.otel import attach_opentelemetry

        adapter = attach_opentelemetry()  # the global providers
        ...
        adapter.detach()

    Args:
        tracer_provider: Where spans go (default: OpenTelemetry's global provider).
        meter_provider: Where metrics go (default: OpenTelemetry's global provider).
        events: Map only events whose names start with these prefixes (default: all, as
            ``counter``/``gauge`` names are the user's own).
        set_current: Make each call's span OpenTelemetry's current span while it runs, so
            instrumented code inside nests under it.

    Returns:
        An ``OpenTelemetryAdapter``; its ``detach()`` (or leaving ``with``) stops the mapping.

    .. versionadded:: 0.1.0
    """
    return OpenTelemetryAdapter(tracer_provider, meter_provider, events, set_current)
