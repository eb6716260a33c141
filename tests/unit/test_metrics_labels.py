"""Per-request metrics carry the tenant (and, from a decision record, the surface), and every
``metrics.X.labels(...)`` call in the app passes as many values as X has labels (a wrong count
raises ``ValueError`` inside a request handler, i.e. a 500 for every request)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from deployments import metrics
from tests.source_ast import parse_file
from tests.unit.explain_samples import sample_record

REPO = Path(__file__).resolve().parents[2]
NOT_PER_REQUEST = {
    "RANKER_BATCH_SIZE": "one observation per batch, and a batch mixes tenants",
    "DECISION_LOG_DROPS": "counts queue overflows, not requests",
}


def _metric_objects() -> dict[str, MetricWrapperBase]:
    return {k: v for k, v in vars(metrics).items() if isinstance(v, MetricWrapperBase)}


def test_every_per_request_metric_has_a_tenant_label():
    for name, metric in _metric_objects().items():
        if name not in NOT_PER_REQUEST:
            assert "tenant" in metric._labelnames, name


def _samples(name: str) -> list:
    return [s for f in metrics.REGISTRY.collect() if f.name == name for s in f.samples]


def test_observe_decision_labels_tenant_and_surface():
    record = sample_record(tenant="t-metrics", surface="home")
    metrics.observe_decision(record)
    for family in ("recsys_stage_latency_ms", "recsys_source_latency_ms",
                   "recsys_source_candidates", "recsys_source_outcomes",
                   "recsys_policy_removals", "recsys_decisions"):  # fmt: skip
        mine = [s for s in _samples(family) if s.labels.get("tenant") == "t-metrics"]
        assert mine, family
        assert all(s.labels["surface"] == "home" for s in mine), family
    removals = {
        (s.labels["rule"], s.labels["reason"]): s.value
        for s in _samples("recsys_policy_removals")
        if s.labels.get("tenant") == "t-metrics" and s.name.endswith("_total")
    }
    assert removals == {("availability", "unavailable"): 1.0, ("hidden", "hidden_by_user"): 1.0}
    outcome = {
        s.labels["outcome"] for s in _samples("recsys_decisions")
        if s.labels.get("tenant") == "t-metrics" and s.name.endswith("_total")
    }  # fmt: skip
    assert outcome == {"personalised"}
    degraded = [s for s in _samples("recsys_degradations") if s.labels.get("tenant") == "t-metrics"]
    assert {s.labels["kind"] for s in degraded} == {"source_timeout"}


def test_observe_decision_counts_every_request_into_the_exported_series():
    """Label children are looked up once and kept: the second request still counts, in the
    series the registry exports."""
    record = sample_record(tenant="t-metrics-twice", surface="home")

    def decisions() -> float:
        return sum(s.value for s in _samples("recsys_decisions")
                   if s.labels.get("tenant") == "t-metrics-twice" and s.name.endswith("_total"))  # fmt: skip

    metrics.observe_decision(record)
    once = decisions()
    metrics.observe_decision(record)
    assert (once, decisions()) == (1.0, 2.0)


def test_observe_request_counts_per_tenant():
    metrics.observe_request("t-req", "recommend", 200, 12.5)
    counts = [s for s in _samples("recsys_request_latency_ms")
              if s.labels.get("tenant") == "t-req" and s.name.endswith("_count")]  # fmt: skip
    assert [(s.labels["endpoint"], s.value) for s in counts] == [("recommend", 1.0)]


def test_merged_exposition_keeps_tenant_labels():
    metrics.observe_decision(sample_record(tenant="t-merge", surface="home"))
    text = metrics.merge_replica_texts([("Ingress#1", metrics.registry_text())])
    assert 'tenant="t-merge"' in text and 'replica="Ingress#1"' in text


def _label_calls() -> list[tuple[str, int, str, int]]:
    """``(file, line, metric, positional values)`` for every ``metrics.X.labels(...)`` call."""
    calls = []
    for path in sorted((REPO / "deployments").glob("*.py")):
        for node in ast.walk(parse_file(path)):
            f = node.func if isinstance(node, ast.Call) else None
            if (isinstance(f, ast.Attribute) and f.attr == "labels"
                    and isinstance(f.value, ast.Attribute)
                    and isinstance(f.value.value, ast.Name) and f.value.value.id == "metrics"):  # fmt: skip
                calls.append((path.name, node.lineno, f.value.attr, len(node.args)))
    return calls


@pytest.mark.parametrize(("file", "line", "metric", "n"), _label_calls())
def test_label_calls_pass_every_label(file, line, metric, n):
    expected = _metric_objects()[metric]._labelnames
    assert n == len(expected), f"{file}:{line} {metric}.labels() needs {expected}"
