"""OpenTelemetry tracing of one command across processes; off unless a setting turns it on.

The spans of one vote form one trace:

1. ``PUT /api/...``: the HTTP request (``kernel.http_middleware``), continuing the caller's
   ``traceparent`` header if it sent one;
2. ``append CastVote``: the wait for the group commit. Its context is stored as ``traceparent``
   in the metadata of the events it appended;
3. ``publish tally.events``: the relay's send, a child of the stored context, passed on in the
   ``traceparent`` Kafka header;
4. ``apply redis``: each projector's apply, a child of that header.

With ``TALLY_OTEL_EXPORTER=none`` (the default) ``tracer()`` is ``None`` and nothing starts a
span or stores a ``traceparent``: even no-op spans cost about 10 µs each on the hot path.
``otlp`` exports over OTLP/HTTP to ``TALLY_OTEL_ENDPOINT``; ``console`` prints spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kernel.settings import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """Tally's tracer, or ``None`` while tracing is off."""
    return _tracer


def build_provider(settings: Settings, service: str) -> TracerProvider | None:
    """The tracer provider ``settings`` ask for, or ``None`` when tracing is off."""
    exporter: SpanExporter
    if settings.otel_exporter == "none":
        return None
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint)
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tally-{service}"}),
        # A trace is kept or dropped as a whole: later processes follow the first one's choice.
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(settings: Settings, service: str) -> None:
    """Install the provider ``settings`` ask for, once per process (nothing when off)."""
    global _tracer
    if _tracer is not None:
        return
    provider = build_provider(settings, service)
    if provider is not None:
        trace.set_tracer_provider(provider)
        _tracer = provider.get_tracer("tally")


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or ``None`` when nothing is traced."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def remote_context(headers: Mapping[str, str]) -> Context:
    """The context a caller passed in ``traceparent`` (and ``tracestate``) headers."""
    return _PROPAGATOR.extract(headers)


def start_message_span(
    traceparent: str | bytes | None,
    name: str,
    kind: SpanKind,
    topic: str,
    partition: int,
    position: int,
    **attributes: str,
) -> Span | None:
    """Start (not enter) the span of one Kafka message, a child of its ``traceparent``.

    ``None`` without one (the event was not traced) or while tracing is off here.
    """
    current = tracer()
    if current is None or not traceparent:
        return None
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode(errors="replace")
    parent = _PROPAGATOR.extract({"traceparent": traceparent})
    return current.start_span(
        name,
        context=parent,
        kind=kind,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "tally.position": position,
            **attributes,
        },
    )


@contextlib.contextmanager
def spans_ended() -> Iterator[list[Span | None]]:
    """A list to collect started spans in; all are ended on leaving, as failed on an error."""
    spans: list[Span | None] = []
    try:
        yield spans
    except BaseException as exc:
        end_spans(spans, exc)
        raise
    end_spans(spans)


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` that makes the receiver's spans children of ``span``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def end_spans(spans: Iterable[Span | None], error: BaseException | None = None) -> None:
    """End every span, marking them failed when ``error`` is given."""
    for span in spans:
        if span is None:
            continue
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
