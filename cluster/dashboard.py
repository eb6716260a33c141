"""The serving dashboard as code: ``configs/dashboards/recsys.json`` is generated from here.

Built with grafana-foundation-sdk, so the JSON is Grafana's own dashboard model. Every query
names only metrics and labels that :mod:`deployments.metrics` registers
(``tests/unit/test_dashboard.py`` parses each query and checks). Panel ids are fixed: the alert
rules in ``configs/alerts/recsys.yaml`` link panels by id (``viewPanel=<id>``).

Regenerate after changing a panel::

    python -m cluster.dashboard            # writes configs/dashboards/recsys.json
    python -m cluster.dashboard --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "recsys-serving"
TITLE = "Recsys serving"
OUTPUT = Path(__file__).resolve().parent.parent / "configs" / "dashboards" / "recsys.json"

_DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
_T = 'tenant=~"$tenant"'
_TS = 'tenant=~"$tenant", surface=~"$surface"'
_R = "[$__rate_interval]"


def panel_url(panel_id: int) -> str:
    """The dashboard URL that opens one panel (what an alert annotation links)."""
    return f"/d/{UID}/recsys-serving?viewPanel={panel_id}"


@dataclass(frozen=True)
class PanelSpec:
    """One panel: a fixed ``id`` (alerts link it), queries as ``(legend, PromQL)`` pairs."""

    id: int
    title: str
    description: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "table" (instant queries, one row per series)


def _q(quantile: float, metric: str, by: str, sel: str) -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}{_R})))"


ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    ("Traffic and errors", (
        PanelSpec(1, "Recommendations per second by tenant and surface",
                  "Answered /v1/recommend requests, from their decision records.",
                  (("{{tenant}} {{surface}} {{outcome}}",
                    f"sum by (tenant, surface, outcome) (rate(recsys_decisions_total{{{_TS}}}{_R}))"),),
                  unit="reqps"),
        PanelSpec(2, "HTTP errors by tenant, endpoint and status",
                  "Every non-2xx answer of the ingress (404 unknown surface, 503 no safe answer...).",
                  (("{{tenant}} {{endpoint}} {{status}}",
                    f'sum by (tenant, endpoint, status) (rate(recsys_requests_total{{{_T}, status!~"2.."}}{_R}))'),),
                  unit="reqps"),
        PanelSpec(3, "Request latency p99 by tenant and endpoint",
                  "End-to-end latency in the ingress; the RecsysHighP99Latency alert watches recommend.",
                  (("{{tenant}} {{endpoint}} p99", _q(0.99, "recsys_request_latency_ms", "tenant, endpoint", _T)),
                   ("{{tenant}} {{endpoint}} p50", _q(0.5, "recsys_request_latency_ms", "tenant, endpoint", _T))),
                  unit="ms"),
    )),
    ("Latency per stage", (
        PanelSpec(4, "Stage latency p50", "Pipeline stages; stage=total is the whole pipeline.",
                  (("{{stage}}", _q(0.5, "recsys_stage_latency_ms", "stage", _TS)),), unit="ms"),
        PanelSpec(5, "Stage latency p99", "Pipeline stages; stage=total is the whole pipeline.",
                  (("{{stage}}", _q(0.99, "recsys_stage_latency_ms", "stage", _TS)),), unit="ms"),
        PanelSpec(6, "Source latency p99", "Each candidate source call (skipped calls left out).",
                  (("{{source}}", _q(0.99, "recsys_source_latency_ms", "source", _TS)),), unit="ms"),
    )),
    ("Candidates", (
        PanelSpec(7, "Candidates per source (p50)", "Candidates a source returned on its ok calls.",
                  (("{{source}}", _q(0.5, "recsys_source_candidates", "source", _TS)),)),
        PanelSpec(8, "Candidates scored per ranker request",
                  "Candidates the ranker scored per request (after the eligibility rules).",
                  (("p50", _q(0.5, "recsys_ranker_candidates", "tenant", _T)),
                   ("p99", _q(0.99, "recsys_ranker_candidates", "tenant", _T)))),
    )),
    ("Timeouts and fallbacks", (
        PanelSpec(9, "Source timeouts and errors", "Source calls that did not answer ok.",
                  (("{{source}} {{status}}",
                    f'sum by (source, status) (rate(recsys_source_outcomes_total{{{_TS}, status!="ok"}}{_R}))'),),
                  unit="reqps"),
        PanelSpec(10, "Fallbacks by tenant and reason",
                  "Responses served from a fallback; *_503 means no safe answer was possible.",
                  (("{{tenant}} {{reason}}",
                    f"sum by (tenant, reason) (rate(recsys_fallbacks_total{{{_T}}}{_R}))"),),
                  unit="reqps"),
        PanelSpec(11, "Fallback share by tenant",
                  "Fallbacks over recommend requests; the RecsysFallbackRateHigh alert fires at 5%.",
                  (("{{tenant}}",
                    f"sum by (tenant) (rate(recsys_fallbacks_total{{{_T}}}{_R})) / sum by (tenant) "
                    f'(rate(recsys_requests_total{{{_T}, endpoint="recommend"}}{_R}))'),),
                  unit="percentunit"),
        PanelSpec(12, "Degradations by kind", "Non-fatal degradations (source_timeout, user_state_missing...).",
                  (("{{tenant}} {{kind}}",
                    f"sum by (tenant, kind) (rate(recsys_degradations_total{{{_T}}}{_R}))"),),
                  unit="reqps"),
    )),
    ("Policy and ranker", (
        PanelSpec(13, "Policy removals by rule and reason", "Candidates removed by eligibility rules.",
                  (("{{rule}} {{reason}}",
                    f"sum by (rule, reason) (rate(recsys_policy_removals_total{{{_TS}}}{_R}))"),),
                  unit="cps"),
        PanelSpec(14, "Ranker batch size", "Requests per @serve.batch call (batches mix tenants).",
                  (("p50", "histogram_quantile(0.5, sum by (le) (rate(recsys_ranker_batch_size_bucket" + _R + ")))"),
                   ("p99", "histogram_quantile(0.99, sum by (le) (rate(recsys_ranker_batch_size_bucket" + _R + ")))"),
                   ("mean", f"sum(rate(recsys_ranker_batch_size_sum{_R})) / sum(rate(recsys_ranker_batch_size_count{_R}))"))),
    )),
    ("Versions", (
        PanelSpec(15, "Versions in service", "Artifact versions the replicas serve now, per tenant.",
                  (("", f"count by (tenant, kind, version) (recsys_version_in_service{{{_T}}} == 1)"),),
                  kind="table"),
        PanelSpec(16, "Hot swaps by outcome", "Runtime swaps; refused or failed keeps the old version serving.",
                  (("{{tenant}} {{component}} {{outcome}}",
                    f"sum by (tenant, component, outcome) (increase(recsys_hot_swaps_total{{{_T}}}{_R}))"),)),
        PanelSpec(19, "Fallback list time to expiry",
                  "Seconds until the production fallback_list expires; RecsysFallbackListExpiring fires under a day.",
                  (("{{tenant}} {{version}}", f"min by (tenant, version) (recsys_fallback_list_expiry_timestamp_seconds{{{_T}}}) - time()"),),
                  unit="s"),
    )),
    ("Events and decision log", (
        PanelSpec(17, "Event gateway: accepted, rejected, duplicates", "POST /v1/events rows by outcome.",
                  (("{{tenant}} {{outcome}}",
                    f"sum by (tenant, outcome) (rate(recsys_events_total{{{_T}}}{_R}))"),),
                  unit="cps"),
        PanelSpec(18, "Decision-log drops", "Decision records dropped because a queue was full.",
                  (("{{where}}", f"sum by (where) (rate(recsys_decision_log_dropped_total{_R}))"),),
                  unit="cps"),
    )),
)  # fmt: skip


def panels() -> list[PanelSpec]:
    return [p for _, row in ROWS for p in row]


def _panel(spec: PanelSpec):
    width = 24 // 3 if spec.kind == "timeseries" else 12
    builder = timeseries.Panel() if spec.kind == "timeseries" else table.Panel()
    builder = builder.id(spec.id).title(spec.title).description(spec.description)
    builder = builder.datasource(_DS).unit(spec.unit).height(8).span(width)
    for ref, (legend, expr) in zip("ABCDEFGH", spec.queries, strict=False):
        query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(_DS)
        if spec.kind == "table":
            query = query.instant().format(PromQueryFormat.TABLE)
        else:
            query = query.range().legend_format(legend)
        builder = builder.with_target(query)
    return builder


def build() -> dict:
    """The dashboard as Grafana's JSON model (a plain dict, keys sorted when written)."""

    def variable(name: str, query: str):
        return (gd.QueryVariable(name).label(name).datasource(_DS).query(query).multi(True)
                .include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))  # fmt: skip

    board = (
        gd.Dashboard(TITLE).uid(UID).tags(["recsys"]).time("now-3h", "now").refresh("30s")
        .timezone("utc").editable()
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(variable("tenant", "label_values(recsys_requests_total, tenant)"))
        .with_variable(variable("surface", 'label_values(recsys_decisions_total{tenant=~"$tenant"}, surface)'))
    )  # fmt: skip
    for n, (title, row) in enumerate(ROWS):
        board = board.with_row(gd.Row(title).id(100 + n))  # panel ids stay 1..99
        for spec in row:
            board = board.with_panel(_panel(spec))
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.dashboard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --output is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m cluster.dashboard", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(panels())} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
