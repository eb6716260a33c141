"""Building the decision record of one request from what its stages returned."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from core.candidates import CandidateBatch, ScoredBatch
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
from core.provenance import gather

_REMOVALS = TypeAdapter(list[RemovalRecord])
_FLOAT = {float}
_new, _set = object.__new__, object.__setattr__


def _built(cls: type, values: dict) -> Any:
    """``cls.model_construct(**values)`` for ``values`` naming every field, each already of
    its declared type (no validation, as ``model_construct``), without its per-call
    bookkeeping (defaults, aliases, extras): the few records built per request."""
    out = _new(cls)
    _set(out, "__dict__", values)
    _set(out, "__pydantic_fields_set__", set(values))
    _set(out, "__pydantic_extra__", None)
    _set(out, "__pydantic_private__", None)
    return out


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
        removals=_removal_records(tr.removals),
        slate=[
            _built(SlateRecord, {
                "item_id": i.item_id,
                "rank": int(i.rank),
                "score": float(i.score),
                "sources": list(i.sources),
                "reasons": list(i.reasons),
                "propensity": None if i.propensity is None else float(i.propensity),
            })
            for i in slate
        ],
        fallback=tr.fallback,
        stage_latency_ms=tr.latency,
        degraded=tr.degraded,
        trace_id=tr.trace_id,
    )


def _all_str(values: list) -> bool:
    """Whether every value is a ``str``: ``str.join`` checks each in C (≈ 6x an
    ``isinstance`` per value) and refuses anything else."""
    try:
        "".join(values)
    except TypeError:
        return False
    return True


def _removal_records(removals: list) -> list[RemovalRecord]:
    """The removals as records, validated in one call. Tens per request: the
    :class:`Removal` dataclasses are validated from their fields' dict (a third cheaper than
    read attribute by attribute); anything else from its attributes."""
    if all(type(r) is Removal for r in removals):
        return _REMOVALS.validate_python([r.__dict__ for r in removals])
    return _REMOVALS.validate_python(removals, from_attributes=True)


def _same(values: list) -> list:
    return values


def _floats(values: Sequence) -> list:
    """``values`` as Python floats (``None`` kept): as they are when they already are (a
    ranker's columns), else converted in C when none is ``None``."""
    if type(values) is list and set(map(type, values)) == _FLOAT:
        return values
    try:
        return np.asarray(values, dtype=np.float64).tolist()
    except (TypeError, ValueError):
        return [None if v is None else float(v) for v in values]


def candidate_table(
    merged: Sequence[MergedCandidate], scored: Sequence[ScoredCandidate]
) -> CandidateTable:
    """The record's candidates as columns (see :class:`core.contracts.CandidateTable`), read
    from the request's batches' columns. Each scored column is gathered onto the merged rows
    in C (a ``None`` sentinel past its end for the rows that were not scored); where the
    scored batch was narrowed from this merge, its rows are the merge's positions already
    (no id lookup). Columns whose types are known by construction (the merge's pair columns,
    float conversions) skip pydantic's per-element validation, which would not change them."""
    merged = CandidateBatch.of(merged)
    scored = ScoredBatch.of(scored)
    item_id = merged.item_ids
    m = len(scored)
    at = scored.positions_in(merged)
    if at is not None:
        pos = np.full(len(item_id), m, dtype=np.int64)  # m: the None sentinel
        pos[at] = np.arange(m)
        hits = pos.tolist()
    else:
        where = dict(zip(scored.item_ids, range(m), strict=True))
        hits = list(map(where.get, item_id, repeat(m)))
    floats = _same if scored.floats else _floats  # the ranker's columns are floats already
    utility = gather([*floats(scored.utility), None], hits)
    if scored.task_dicts is None:
        task_scores = {t: gather([*floats(scored.task_column(t)), None], hits)
                       for t in scored.task_columns} if m else {}  # fmt: skip
    else:
        dicts = scored.task_dicts
        tasks = list(next((d for d in dicts if d), {}))
        task_scores = {t: [None if h == m else dicts[h].get(t) for h in hits] for t in tasks}
    rows, source, version, score, rank = merged.provenance_columns()
    columns = dict(item_id=item_id, utility=utility, task_scores=task_scores,
                   provenance_row=rows, provenance_source=source, provenance_version=version,
                   provenance_score=score, provenance_rank=rank)  # fmt: skip
    if merged.typed_provenance and scored.task_dicts is None and _all_str(item_id):
        return CandidateTable.model_construct(**columns)
    return CandidateTable(**columns)
