"""Serving metrics (prometheus-client) and their aggregation across Serve replicas.

Every replica process records into its own :data:`REGISTRY`. ``GET /metrics`` on the ingress
asks every deployment's replicas for their registry text (``metrics_text``, a broadcast) and
merges them with :func:`merge_replica_texts`: each sample gets a ``replica`` label, so the
result is one valid exposition with one series per replica (sum over ``replica`` for totals,
as Prometheus would after scraping each replica itself).

Most request metrics are derived from the :class:`core.contracts.DecisionRecord` in
:func:`observe_decision`, so what is counted is exactly what the decision log says happened.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from core.contracts import DecisionRecord

REGISTRY = CollectorRegistry(auto_describe=True)
_MS = (0.5, 1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250, 500, 1000, 2500)

# Every per-request metric carries ``tenant`` (from the API key, never from the request body);
# those derived from a decision record also carry ``surface`` (validated against the tenant's
# config before a record exists, so its values are bounded). Metrics that are not about one
# request do not: ranker batches mix tenants, and decision-log drops count queue overflows.

REQUESTS = Counter(
    "recsys_requests_total", "HTTP requests by tenant, endpoint and status",
    ["tenant", "endpoint", "status"], registry=REGISTRY,
)  # fmt: skip
REQUEST_LATENCY = Histogram(
    "recsys_request_latency_ms", "End-to-end request latency in the ingress (ms)",
    ["tenant", "endpoint"], buckets=_MS, registry=REGISTRY,
)  # fmt: skip
DECISIONS = Counter(
    "recsys_decisions_total",
    "Recommendations answered, by outcome (personalised, or the fallback reason)",
    ["tenant", "surface", "outcome"], registry=REGISTRY,
)  # fmt: skip
STAGE_LATENCY = Histogram(
    "recsys_stage_latency_ms", "Pipeline stage latency (ms); stage=total is the whole pipeline",
    ["tenant", "surface", "stage"], buckets=_MS, registry=REGISTRY,
)  # fmt: skip
SOURCE_LATENCY = Histogram(
    "recsys_source_latency_ms", "Candidate source call latency (ms), skipped calls left out",
    ["tenant", "surface", "source"], buckets=_MS, registry=REGISTRY,
)  # fmt: skip
SOURCE_CANDIDATES = Histogram(
    "recsys_source_candidates", "Candidates returned per source per request",
    ["tenant", "surface", "source"],
    buckets=(0, 1, 5, 10, 25, 50, 100, 200, 400, 800, 1600), registry=REGISTRY,
)  # fmt: skip
SOURCE_OUTCOMES = Counter(
    "recsys_source_outcomes_total", "Candidate source calls by outcome (ok/timeout/error/skipped)",
    ["tenant", "surface", "source", "status"], registry=REGISTRY,
)  # fmt: skip
FALLBACKS = Counter(
    "recsys_fallbacks_total", "Responses served from a fallback, by reason", ["tenant", "reason"],
    registry=REGISTRY,
)  # fmt: skip
POLICY_REMOVALS = Counter(
    "recsys_policy_removals_total", "Candidates removed by eligibility rules",
    ["tenant", "surface", "rule", "reason"], registry=REGISTRY,
)  # fmt: skip
DEGRADATIONS = Counter(
    "recsys_degradations_total", "Non-fatal degradations recorded in decisions",
    ["tenant", "kind"], registry=REGISTRY,
)  # fmt: skip
RANKER_BATCH_SIZE = Histogram(
    "recsys_ranker_batch_size", "Requests per @serve.batch call of the ranker (mixes tenants)",
    buckets=(1, 2, 4, 8, 16, 32, 64), registry=REGISTRY,
)  # fmt: skip
RANKER_CANDIDATES = Histogram(
    "recsys_ranker_candidates", "Candidates scored per ranker request", ["tenant"],
    buckets=(0, 10, 50, 100, 250, 500, 1000, 2000), registry=REGISTRY,
)  # fmt: skip
VERSIONS_IN_SERVICE = Gauge(
    "recsys_version_in_service", "1 for each artifact version a replica is serving",
    ["tenant", "kind", "version"], registry=REGISTRY,
)  # fmt: skip
HOT_SWAPS = Counter(
    "recsys_hot_swaps_total", "Runtime swaps by outcome (swapped/refused/failed)",
    ["tenant", "component", "outcome"], registry=REGISTRY,
)  # fmt: skip
DECISION_LOG_DROPS = Counter(
    "recsys_decision_log_dropped_total", "Decision records dropped because a queue was full",
    ["where"], registry=REGISTRY,
)  # fmt: skip
FALLBACK_LIST_EXPIRY = Gauge(
    "recsys_fallback_list_expiry_timestamp_seconds",
    "expires_at (Unix seconds) of the production fallback_list a replica loaded",
    ["tenant", "version"], registry=REGISTRY,
)  # fmt: skip
EVENTS = Counter(
    "recsys_events_total", "Events received, by tenant and outcome", ["tenant", "outcome"],
    registry=REGISTRY,
)  # fmt: skip


def observe_request(tenant: str, endpoint: str, status: int | str, latency_ms: float) -> None:
    """Count one HTTP request and its latency (what the ingress does for every answer)."""
    _child(REQUESTS, tenant, endpoint, str(status)).inc()
    _child(REQUEST_LATENCY, tenant, endpoint).observe(latency_ms)


_CHILDREN: dict[tuple, Any] = {}
_MAX_CHILDREN = 10_000


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set: prometheus-client's
    ``labels`` validates and locks on every call, and a request asks for ≈ 25 of them. Label
    values are bounded (tenant, configured surfaces, sources, stages, reason codes); the cap
    only guards against a bug making them unbounded. Not for metrics whose children are
    removed (the versions gauge)."""
    key = (id(metric), *labels)
    child = _CHILDREN.get(key)
    if child is None:
        if len(_CHILDREN) >= _MAX_CHILDREN:
            _CHILDREN.clear()
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def observe_decision(record: DecisionRecord) -> None:
    """Record the per-request metrics a decision record implies."""
    t, surface = record.tenant_id, record.surface
    _child(DECISIONS, t, surface, record.fallback or "personalised").inc()
    for stage, ms in record.stage_latency_ms.items():
        _child(STAGE_LATENCY, t, surface, stage).observe(ms)
    for outcome in record.sources:
        _child(SOURCE_OUTCOMES, t, surface, outcome.source, outcome.status).inc()
        if outcome.status != "skipped":
            _child(SOURCE_LATENCY, t, surface, outcome.source).observe(outcome.latency_ms)
        if outcome.status == "ok":
            _child(SOURCE_CANDIDATES, t, surface, outcome.source).observe(outcome.candidates)
    if record.fallback:
        _child(FALLBACKS, t, record.fallback).inc()
    # Tens of removals per request, a handful of distinct (rule, reason): one labelled
    # increment per pair, not per removal.
    for (rule, reason), n in Tally((r.rule, r.reason) for r in record.removals).items():
        _child(POLICY_REMOVALS, t, surface, rule, reason).inc(n)
    for item in record.degraded:
        _child(DEGRADATIONS, t, item.split(":", 1)[0]).inc()


def set_versions(tenant: str, versions: dict[str, str]) -> None:
    """Make the versions gauge show exactly ``versions`` (kind -> version) for ``tenant``."""
    for metric in list(VERSIONS_IN_SERVICE.collect()):
        for sample in metric.samples:
            labels = sample.labels
            if labels.get("tenant") == tenant and versions.get(labels["kind"]) != labels["version"]:
                VERSIONS_IN_SERVICE.remove(tenant, labels["kind"], labels["version"])
    for kind, version in versions.items():
        VERSIONS_IN_SERVICE.labels(tenant, kind, version).set(1)


def registry_text() -> str:
    return generate_latest(REGISTRY).decode()


def merge_replica_texts(texts: Iterable[tuple[str, str]]) -> str:
    """Merge ``(replica_id, exposition_text)`` pairs into one exposition, each sample labelled
    with its ``replica``. Families of the same name are combined; HELP/TYPE come from the
    first replica that reports the family."""
    families: dict[str, Metric] = {}
    for replica, text in texts:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created"):
                continue  # creation-time gauges say nothing once merged
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, "replica": replica}, s.value, s.timestamp)

    class _Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry).decode()


async def gather_text(own: str, handles: Mapping[str, Any]) -> str:
    """This replica's exposition (as ``own``) merged with every replica of every deployment in
    ``handles`` (a ``metrics_text`` broadcast each); a deployment that does not answer within
    5 s is left out of this scrape."""
    texts = [(own, registry_text())]
    for name, handle in handles.items():
        try:
            answers = await handle.broadcast("metrics_text").results_async(
                timeout_s=5.0, return_exceptions=True
            )
        except Exception:  # noqa: BLE001
            continue
        texts += [(f"{name}#{i}", a) for i, a in enumerate(answers) if isinstance(a, str)]
    return merge_replica_texts(texts)
