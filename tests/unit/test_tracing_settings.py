"""Tracing is off by default and turned on, and checked, by ``TALLY_OTEL_*`` settings."""

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tally.settings import SettingsError, load_settings
from tally.tracing import build_provider, end_spans, start_linked_span


def test_tracing_is_off_by_default() -> None:
    assert build_provider(load_settings({}), "relay") is None


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


def test_an_untraced_event_gets_no_span() -> None:
    from opentelemetry.trace import SpanKind

    assert start_linked_span(None, "publish", SpanKind.PRODUCER, {}) is None
    assert start_linked_span(b"", "publish", SpanKind.PRODUCER, {}) is None
    end_spans([None])  # nothing to end, nothing raised
