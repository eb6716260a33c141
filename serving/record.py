"""Building the decision record of one request from what its stages returned."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import TypeAdapter

from core.contracts import (
    CandidateTable,
    DecisionRecord,
    MergedCandidate,
    Query,
    Removal,
    RemovalRecord,
    ScoredCandidate,
    SlateItem,
    SlateRecord,
    SourceOutcome,
)

_REMOVALS = TypeAdapter(list[RemovalRecord])


@dataclass
class Trace:
    """What a request collects on its way: stage latencies, degradations, the fallback taken,
    source outcomes, removals and the artifact versions each stage reported."""

    started: float = field(default_factory=time.perf_counter)
    latency: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    fallback: str | None = None
    outcomes: list[SourceOutcome] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    """The OpenTelemetry trace id when this request is traced (:mod:`serving.tracing`)."""
    _mark: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.latency[stage] = round((now - self._mark) * 1000.0, 3)
        self._mark = now

    def fall_back(self, reason: str) -> None:
        # One response has one fallback; a second failure on the way is still recorded.
        if self.fallback is None:
            self.fallback = reason
        else:
            self.degraded.append(reason)


def decision_record(
    query: Query,
    merged: Sequence[MergedCandidate],
    scored: Sequence[ScoredCandidate],
    slate: Sequence[SlateItem],
    versions: Mapping[str, str],
    tr: Trace,
) -> DecisionRecord:
    tr.latency["total"] = round((time.perf_counter() - tr.started) * 1000.0, 3)
    exp = query.experiment
    return DecisionRecord(
        request_id=query.request_id,
        tenant_id=query.tenant_id,
        user_id=query.user_id,
        surface=query.surface,
        k=query.k,
        at=query.now,
        experiment={
            "id": exp.experiment_id if exp else "",
            "arm": exp.arm if exp else "default",
        },
        versions=dict(versions),
        sources=tr.outcomes,
        candidates=candidate_table(merged, scored),
        # Tens per request: validated from the Removal dataclasses' attributes in one call.
        removals=_REMOVALS.validate_python(tr.removals, from_attributes=True),
        slate=[
            SlateRecord.model_construct(
                item_id=i.item_id,
                rank=int(i.rank),
                score=float(i.score),
                sources=list(i.sources),
                reasons=list(i.reasons),
                propensity=None if i.propensity is None else float(i.propensity),
            )
            for i in slate
        ],
        fallback=tr.fallback,
        stage_latency_ms=tr.latency,
        degraded=tr.degraded,
        trace_id=tr.trace_id,
    )


def candidate_table(
    merged: Sequence[MergedCandidate], scored: Sequence[ScoredCandidate]
) -> CandidateTable:
    """The record's candidates as columns (see :class:`core.contracts.CandidateTable`)."""
    by_id = {s.item_id: s for s in scored}
    tasks = list(next((s.task_scores for s in scored if s.task_scores), {}))
    item_id = [m.item_id for m in merged]
    hits = list(map(by_id.get, item_id))
    utility = [None if s is None or s.utility is None else float(s.utility) for s in hits]
    task_scores = {
        t: [None if s is None else s.task_scores.get(t) for s in hits] for t in tasks
    }
    # One pass over (candidate, source) pairs into five columns.
    rows: list[int] = []
    prov: list = []
    for row, m in enumerate(merged):
        p = m.provenance
        if len(p) == 1:
            rows.append(row)
            prov.append(p[0])
        else:
            rows.extend([row] * len(p))
            prov.extend(p)
    if prov:
        _, source, version, score, rank, _ = zip(*prov, strict=True)
    else:
        source = version = score = rank = ()
    return CandidateTable(
        item_id=item_id,
        utility=utility,
        task_scores=task_scores,
        provenance_row=rows,
        provenance_source=list(source),
        provenance_version=list(version),
        provenance_score=list(score),
        provenance_rank=list(rank),
    )
