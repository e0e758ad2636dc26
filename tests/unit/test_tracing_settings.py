"""Tracing is off by default and turned on, and checked, by ``TALLY_OTEL_*`` settings."""

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from kernel import tracing
from kernel.settings import SettingsError, load_settings
from kernel.tracing import build_provider, configure_tracing, spans_ended, start_message_span


def test_tracing_is_off_by_default() -> None:
    assert build_provider(load_settings({}), "relay") is None
    configure_tracing(load_settings({}), "relay")
    assert tracing.tracer() is None


@pytest.mark.parametrize("exporter", ["otlp", "console"])
def test_an_exporter_setting_builds_a_provider_named_after_the_service(exporter: str) -> None:
    settings = load_settings({"TALLY_OTEL_EXPORTER": exporter, "TALLY_OTEL_SAMPLE_RATIO": "0.25"})
    provider = build_provider(settings, "relay")
    assert isinstance(provider, TracerProvider)
    try:
        assert provider.resource.attributes["service.name"] == "tally-relay"
        assert "0.25" in provider.sampler.get_description()
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TALLY_OTEL_EXPORTER", "jaeger"), ("TALLY_OTEL_SAMPLE_RATIO", "2")],
)
def test_a_bad_tracing_setting_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_no_span_is_started_without_a_traceparent_or_while_tracing_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert start_message_span(traceparent, "publish", SpanKind.PRODUCER, "t", 0, 1) is None  # off
    provider = TracerProvider()
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    assert start_message_span(None, "publish", SpanKind.PRODUCER, "t", 0, 1) is None
    assert start_message_span(b"", "publish", SpanKind.PRODUCER, "t", 0, 1) is None
    with spans_ended() as spans:
        span = start_message_span(traceparent.encode(), "publish", SpanKind.PRODUCER, "t", 0, 1)
        spans += [span, None]
    assert span is not None
    assert span.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert not span.is_recording()  # ended
