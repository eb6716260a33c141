"""serving.tracing: off and free by default; on, one trace per request with a span per stage,
and exported over real OTLP/HTTP. (Across a real Serve graph: tests/integration/test_traced_app.py.)"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from serving import tracing
from tests.otlp_receiver import OtlpReceiver
from tests.unit.test_pipeline import ask, pipeline, world  # noqa: F401 (the module's fixture)

STAGES = {"user_state", "sources", "rules", "ranker", "slate"}


@pytest.fixture
def memory():
    exporter = InMemorySpanExporter()
    provider = tracing.configure(tracing.make_provider([SimpleSpanProcessor(exporter)]))
    yield exporter
    tracing.disable()
    provider.shutdown()


@pytest.fixture(autouse=True)
def _off_after():
    yield
    tracing.disable()


def test_off_by_default_makes_nothing(world, monkeypatch) -> None:  # noqa: F811
    assert not tracing.enabled()
    # Off, no OpenTelemetry call is made at all: the context API would fail if reached.
    import opentelemetry.trace as otel

    def refuse(*a, **k):
        raise AssertionError("OpenTelemetry touched while tracing is off")

    monkeypatch.setattr(otel, "get_current_span", refuse)
    assert tracing.span("x") is tracing.span("y")  # one shared no-op
    with tracing.span("x") as sp:
        assert sp is None
    assert tracing.trace_id() is None
    res = ask(pipeline(world), world)
    assert res.decision.trace_id is None and len(res.slate) > 0


def test_one_trace_per_request_with_a_span_per_stage(world, memory) -> None:  # noqa: F811
    res = ask(pipeline(world), world, rid="r-traced")
    spans = memory.get_finished_spans()
    by_name = {s.name: s for s in spans}
    root = by_name["recommend"]
    assert root.parent is None
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert res.decision.trace_id == format(root.context.trace_id, "032x")
    assert root.attributes["recsys.request_id"] == "r-traced"
    assert root.attributes["recsys.slate_items"] == len(res.slate)
    assert root.attributes["recsys.version.ranker"] == "rk-v1"
    for stage in STAGES:  # each stage a child of the request's span
        assert by_name[stage].parent.span_id == root.context.span_id, stage
    # One span per source under "sources", with the candidates the record counts.
    d = res.decision
    sources = by_name["sources"]
    per_source = {s.attributes["recsys.source"]: s for s in spans if s.name.startswith("source ")}
    assert set(per_source) == {o.source for o in d.sources}
    for o in d.sources:
        sp = per_source[o.source]
        assert sp.parent.span_id == sources.context.span_id
        assert sp.attributes["recsys.candidates"] == o.candidates
        assert sp.attributes["recsys.status"] == o.status
    assert per_source["two_tower"].attributes["recsys.version.ann_index"] == "ix-v1"
    assert sources.attributes["recsys.candidates"] == sum(o.candidates for o in d.sources)
    rules = by_name["rules"].attributes
    assert rules["recsys.candidates"] == len(d.candidates)
    assert rules["recsys.kept"] + rules["recsys.removed"] == len(d.candidates)
    assert by_name["ranker"].attributes["recsys.version.ranker"] == "rk-v1"
    assert by_name["slate"].attributes["recsys.slate_items"] == len(res.slate)


def test_each_request_its_own_trace(world, memory) -> None:  # noqa: F811
    pipe = pipeline(world)
    a, b = ask(pipe, world, rid="a"), ask(pipe, world, rid="b")
    assert a.decision.trace_id and b.decision.trace_id and a.decision.trace_id != b.decision.trace_id
    roots = [s for s in memory.get_finished_spans() if s.name == "recommend"]
    assert [s.attributes["recsys.request_id"] for s in roots] == ["a", "b"]


def test_unsampled_request_has_no_trace_id_and_no_spans(world) -> None:  # noqa: F811
    exporter = InMemorySpanExporter()
    provider = tracing.configure(tracing.make_provider([SimpleSpanProcessor(exporter)], 0.0))
    try:
        res = ask(pipeline(world), world)
    finally:
        provider.shutdown()
    assert res.decision.trace_id is None and exporter.get_finished_spans() == ()


def test_ray_hook_without_endpoint_stays_off(monkeypatch) -> None:
    for name in tracing.ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert tracing.otlp_span_processors() == [] and not tracing.enabled()


def test_ray_hook_follows_the_serve_span(monkeypatch) -> None:
    """Under Ray Serve the module only opens spans below a recording parent (Serve's request
    span): with none current, nothing is made."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    processors = tracing.otlp_span_processors()
    try:
        assert [type(p) for p in processors] == [BatchSpanProcessor] and tracing.enabled()
        with tracing.span("orphan") as sp:
            assert sp is None
    finally:
        for p in processors:
            p.shutdown()


def test_spans_reach_an_otlp_http_endpoint(world) -> None:  # noqa: F811
    """The SDK's real OTLP/HTTP exporter posting protobuf to a receiver on loopback."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with OtlpReceiver() as rx:
        exporter = OTLPSpanExporter(endpoint=rx.endpoint + "/v1/traces")
        provider = tracing.configure(
            tracing.make_provider([SimpleSpanProcessor(exporter)], service="recsys-test")
        )
        try:
            res = ask(pipeline(world), world, rid="r-otlp")
        finally:
            provider.shutdown()
        spans = rx.wait_for(lambda s: any(x["name"] == "recommend" for x in s), 10)
    assert {s["trace_id"] for s in spans} == {res.decision.trace_id}
    root = next(s for s in spans if s["name"] == "recommend")
    assert root["parent_id"] is None and root["attributes"]["recsys.request_id"] == "r-otlp"
    assert root["resource"]["service.name"] == "recsys-test"
    children = {s["name"] for s in spans if s["parent_id"] == root["span_id"]}
    assert children == STAGES
