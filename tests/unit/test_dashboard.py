"""The dashboard and the alert rules name only what the app exports, and link what exists.

Every PromQL query (dashboard panels, template variables, alert rules) is parsed with a real
PromQL parser; each metric it selects must be registered in ``deployments/metrics.py`` and each
label it matches or groups by must be one of that metric's labels (plus ``le`` on histogram
buckets, ``replica`` added by the ingress's merge, and ``job``/``instance`` added by scraping).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import promql_parser
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from cluster import dashboard
from deployments import metrics

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "configs" / "alerts" / "recsys.yaml"
ADDED_LABELS = {"replica", "job", "instance"}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "3h"}


def exported_series() -> dict[str, set[str]]:
    """Series name → label names, as the exposition of :data:`metrics.REGISTRY` shows them."""
    out: dict[str, set[str]] = {}
    for collector in set(metrics.REGISTRY._collector_to_names):  # every registered metric
        name, labels = collector._name, set(collector._labelnames)
        if collector._type == "counter":
            out[f"{name}_total"] = labels
        elif collector._type == "histogram":
            out[f"{name}_bucket"] = labels | {"le"}
            out[f"{name}_sum"] = out[f"{name}_count"] = labels
        else:
            out[name] = labels
    return out


def _walk(node, selectors: list, groupings: list) -> list[str]:
    """Collect ``(metric, matcher labels)`` and ``(grouping labels, metrics in scope)``; returns
    the metric names under ``node``."""
    p = promql_parser
    if isinstance(node, p.VectorSelector):
        assert node.name, f"selector without a metric name: {node}"
        selectors.append((node.name, {m.name for m in node.matchers.matchers} - {"__name__"}))
        return [node.name]
    if isinstance(node, p.MatrixSelector):
        return _walk(node.vector_selector, selectors, groupings)
    if isinstance(node, p.AggregateExpr):
        names = _walk(node.expr, selectors, groupings)
        if node.modifier is not None:
            groupings.append((set(node.modifier.labels), names))
        return names
    if isinstance(node, p.BinaryExpr):
        names = _walk(node.lhs, selectors, groupings) + _walk(node.rhs, selectors, groupings)
        mod = node.modifier
        if mod is not None:
            labels = set(mod.matching.labels) if mod.matching is not None else set()
            groupings.append((labels | set(mod.group_labels or []), names))
        return names
    if isinstance(node, p.Call):
        return [n for a in node.args for n in _walk(a, selectors, groupings)]
    if isinstance(node, p.ParenExpr | p.UnaryExpr | p.SubqueryExpr):
        return _walk(node.expr, selectors, groupings)
    assert isinstance(node, p.NumberLiteral | p.StringLiteral), f"unhandled node {type(node)}"
    return []


def problems(expr: str) -> list[str]:
    """What is wrong with one query's metric and label names (empty: nothing)."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    exported = exported_series()
    selectors: list = []
    groupings: list = []
    _walk(promql_parser.parse(expr), selectors, groupings)
    out = []
    for name, labels in selectors:
        if name not in exported:
            out.append(f"{name} is not exported")
        elif unknown := labels - exported[name] - ADDED_LABELS:
            out.append(f"{name} has no label(s) {sorted(unknown)}")
    for labels, names in groupings:
        known = set().union(*(exported.get(n, set()) for n in names)) | ADDED_LABELS
        if unknown := labels - known:
            out.append(f"grouping by {sorted(unknown)}: not a label of {sorted(set(names))}")
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((REPO / "configs" / "dashboards" / "recsys.json").read_text())
    out = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var.get("query", ""))
        if m:  # label_values(selector, label): the label must be one of the selector's
            out.append((f"${var['name']}", f"sum by ({m.group(2)}) ({m.group(1)})"))
    return out


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------------- the checker


def test_checker_catches_unknown_metrics_labels_and_groupings():
    assert problems('sum by (tenant) (rate(recsys_requests_total{status="500"}[5m]))') == []
    assert problems("rate(recsys_requests[5m])") == ["recsys_requests is not exported"]
    assert problems('rate(recsys_stage_latency_ms_sum{stag="x"}[5m])') == [
        "recsys_stage_latency_ms_sum has no label(s) ['stag']"
    ]
    assert problems("sum by (le) (rate(recsys_stage_latency_ms_sum[5m]))") != []
    assert problems("sum by (le) (rate(recsys_stage_latency_ms_bucket[5m]))") == []
    with pytest.raises(ValueError):
        problems("sum by (tenant (rate(recsys_requests_total[5m]))")


# ----------------------------------------------------------------------------- the dashboard


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries())
def test_every_dashboard_query_names_exported_metrics_and_labels(panel, expr):
    assert problems(expr) == [], panel


def test_committed_dashboard_is_what_the_builder_generates():
    committed = (REPO / "configs" / "dashboards" / "recsys.json").read_text()
    assert committed == dashboard.render(), "stale: run python -m cluster.dashboard"
    assert dashboard.main(["--check", "--output", str(dashboard.OUTPUT)]) == 0


def test_dashboard_json_loads_as_grafanas_model():
    data = json.loads((REPO / "configs" / "dashboards" / "recsys.json").read_text())
    model = Dashboard.from_json(data)
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == data  # nothing unknown or lost
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique (alerts link them)"


def test_dashboard_covers_what_operators_asked_for():
    exprs = " ".join(e for _, e in dashboard_queries())
    for metric in ("recsys_decisions_total", "recsys_requests_total", "recsys_stage_latency_ms",
                   "recsys_source_candidates", "recsys_source_outcomes_total",
                   "recsys_fallbacks_total", "recsys_policy_removals_total",
                   "recsys_ranker_batch_size", "recsys_version_in_service",
                   "recsys_events_total", "recsys_decision_log_dropped_total"):  # fmt: skip
        assert metric in exprs
    stage_panels = [e for t, e in dashboard_queries() if t.startswith("Stage latency")]
    assert any("histogram_quantile(0.5," in e for e in stage_panels)
    assert any("histogram_quantile(0.99," in e for e in stage_panels)


# ------------------------------------------------------------------------------- the alerts


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_rule_queries_links_panel_and_runbook(rule):
    assert problems(rule["expr"]) == []
    notes = rule["annotations"]
    assert (REPO / notes["runbook"]).is_file(), notes["runbook"]
    url = urlparse(notes["dashboard"])
    assert url.path.startswith(f"/d/{dashboard.UID}/")
    panel_id = int(parse_qs(url.query)["viewPanel"][0])
    assert notes["dashboard"] == dashboard.panel_url(panel_id)
    titles = {p.id: p.title for p in dashboard.panels()}
    assert titles.get(panel_id) == notes["panel"], "the annotation names the panel it links"


# --------------------------------------------------------------------------- the docs' queries

DOCS = [REPO / "docs" / "operations.md", *sorted((REPO / "docs" / "runbooks").glob("*.md"))]


def doc_queries() -> list[tuple[str, str]]:
    """Backticked PromQL in the runbooks and operations.md: what on-call copies and pastes."""
    out = []
    for path in DOCS:
        for snippet in re.findall(r"`([^`\n]*recsys_[^`\n]*)`", path.read_text()):
            if ("(" in snippet or "{" in snippet) and "…" not in snippet:
                out.append((path.name, snippet))
    return out


@pytest.mark.parametrize(("doc", "expr"), doc_queries())
def test_queries_in_the_docs_name_exported_metrics_and_labels(doc, expr, monkeypatch):
    # Prose may name a histogram by its family (recsys_stage_latency_ms{stage="ranker"}).
    series = exported_series()
    families = {n[: -len("_count")]: labels for n, labels in series.items() if n.endswith("_count")}
    monkeypatch.setattr(sys.modules[__name__], "exported_series", lambda: {**families, **series})
    assert problems(expr) == [], doc


def test_panel_links_in_the_docs_exist():
    ids = {p.id for p in dashboard.panels()}
    for path in DOCS:
        for panel_id in re.findall(r"viewPanel=(\d+)", path.read_text()):
            assert int(panel_id) in ids, f"{path.name}: viewPanel={panel_id}"
