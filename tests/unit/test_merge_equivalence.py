"""The request path's merge is the reference merge, candidate for candidate.

``serving.merge.merge`` sorts every candidate once and gathers provenance only for items
several sources proposed (issue 13: per-request Python work). The reference below is the
previous implementation, kept verbatim: on random source answers (overlapping items, sources
of every size, pins) both give the same items, in the same order, with the same provenance.

Sources answer columns (``core.provenance.SourceColumns``) and the merge keeps provenance as
pair columns: the columns a merged batch derives from them (the two-tower score, the best
source, the record's provenance table) are those of the same batch built from rows.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from core.candidates import CandidateBatch, ScoredBatch
from core.contracts import (
    Candidate,
    CandidateTable,
    DecisionRecord,
    MergedCandidate,
    RemovalRecord,
    SlateRecord,
    SourceOutcome,
    SourceResult,
    decision_bytes,
    decision_json,
)
from core.provenance import SourceColumns
from retrieval.sources.base import make_result
from serving.merge import merge
from serving.record import candidate_table
from tests.unit.serving_fixtures import catalogue


def reference_merge(results, extra=()):
    prov: dict[str, list[Candidate]] = {}
    order: dict[str, tuple[int, int]] = {}
    for s_idx, res in enumerate([*results, SourceResult("extra", "", tuple(extra))]):
        for c in res.candidates:
            prov.setdefault(c.item_id, []).append(c)
            key = (c.rank, s_idx)
            if c.item_id not in order or key < order[c.item_id]:
                order[c.item_id] = key
    items = sorted(prov, key=lambda i: order[i])
    return [MergedCandidate(item_id=i, provenance=tuple(prov[i])) for i in items]


def _first_two_tower(merged) -> np.ndarray:
    """The ranker's retrieval score of each merged candidate: the two-tower's, NaN if none."""
    return np.array([next((p.score for p in c.provenance if p.source == "two_tower"), np.nan)
                     for c in merged], dtype=np.float32)  # fmt: skip


def _pair_columns(merged) -> tuple:
    """The record's provenance columns, pair by pair from the rows."""
    pairs = [(r, p.source, p.source_version, p.score, p.rank) for r, c in enumerate(merged) for p in c.provenance]
    return tuple(list(col) for col in zip(*pairs, strict=True)) if pairs else ([], [], [], [], [])


def _answer(rng: random.Random, name: str, pool: int, n: int) -> SourceResult:
    items = rng.sample([f"i{k}" for k in range(pool)], n)
    scores = [rng.choice([0.25, 0.5, rng.random()]) for _ in items]  # ties for the best source
    if rng.random() < 0.5:  # columns, as the built-in sources answer; some with diagnostics
        per_item = {i: {"seed": i} for i in items[::3]} if rng.random() < 0.5 else None
        return make_result(name, "v1", list(zip(items, scores, strict=True)), per_item=per_item)
    return SourceResult(name, "v1", tuple(Candidate(i, name, "v1", sc, r)
                                          for r, (i, sc) in enumerate(zip(items, scores, strict=True))))  # fmt: skip


def _with_rows(res: SourceResult, cat) -> SourceResult:
    """``res`` answered as columns with its items' rows in ``cat`` (as the two-tower and the
    fresh sources answer)."""
    c = res.candidates
    cols = SourceColumns(res.source, res.version, [x.item_id for x in c], [x.score for x in c],
                         getattr(c, "diagnostics", None), rows=cat.index_of([x.item_id for x in c]),
                         catalogue=cat)  # fmt: skip
    return replace(res, candidates=cols)


@pytest.mark.parametrize("seed", range(30))
def test_merge_matches_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.choice([5, 50, 800])
    names = ["s0", "two_tower", "s2", "s3", "s4"]  # two_tower: the ranker's retrieval score
    results = [_answer(rng, names[k], pool, rng.randint(0, min(pool, 300)))
               for k in range(rng.randint(0, 5))]  # fmt: skip
    pins = [Candidate(f"i{rng.randrange(pool)}", "pinned", "config", 0.0, p)
            for p in rng.sample(range(10), rng.randint(0, 3))]  # fmt: skip
    got, want = merge(results, pins), reference_merge(results, pins)
    assert got == want
    # Sources that carry their items' catalogue rows (the merge then de-duplicates by row,
    # ids outside the catalogue by id): the same batch, its rows those of its ids.
    cat = catalogue([{"item_id": f"i{k}"} for k in range(max(1, pool * 4 // 5))])
    carried = [_with_rows(r, cat) if rng.random() < 0.7 else r for r in results]
    by_row = merge(carried, pins)
    assert by_row == want and by_row.provenance_columns() == _pair_columns(want)
    assert by_row.rows(cat).tolist() == cat.index_of([c.item_id for c in want]).tolist()
    # Every item in the catalogue: the items de-duplicated by row alone, their ids read there.
    full = catalogue([{"item_id": f"i{k}"} for k in range(pool)])
    all_rows = merge([_with_rows(r, full) if rng.random() < 0.7 else r for r in results], pins)
    assert all_rows == want and all_rows.provenance_columns() == _pair_columns(want)
    assert all_rows.rows(full).tolist() == full.index_of([c.item_id for c in want]).tolist()
    rows = CandidateBatch([c.item_id for c in want], [c.provenance for c in want])
    assert got.best_sources() == rows.best_sources() == [c.best.source for c in want]
    np.testing.assert_array_equal(got.retrieval_scores(), rows.retrieval_scores())
    np.testing.assert_array_equal(got.retrieval_scores(), _first_two_tower(want))
    assert got.provenance_columns() == rows.provenance_columns() == _pair_columns(want)
    # A narrowed batch (what the rules hand the ranker) reads the same rows and columns.
    pick = sorted(rng.sample(range(len(want)), len(want) // 2))
    narrowed = got.take(pick)
    assert list(narrowed) == [want[i] for i in pick]
    assert narrowed.best_sources() == [want[i].best.source for i in pick]
    np.testing.assert_array_equal(narrowed.retrieval_scores(), _first_two_tower([want[i] for i in pick]))
    assert narrowed.provenance_columns() == _pair_columns([want[i] for i in pick])
    assert narrowed.sources_of(range(len(pick))) == [tuple(dict.fromkeys(want[i].sources)) for i in pick]
    assert [narrowed[i] for i in range(len(pick))] == [want[i] for i in pick]


def test_a_column_answer_reads_as_its_rows() -> None:
    res = make_result("s", "v", [("a", 0.5), ("b", 0.25), ("c", 0.125)], per_item={"b": {"x": 1}})
    rows = [Candidate("a", "s", "v", 0.5, 0), Candidate("b", "s", "v", 0.25, 1, {"x": 1}),
            Candidate("c", "s", "v", 0.125, 2)]  # fmt: skip
    assert list(res.candidates) == rows and res.candidates[1] == rows[1]
    assert list(res.candidates[1:]) == rows[1:]  # a quota's cut keeps each item's rank


def test_merge_of_nothing_is_empty() -> None:
    assert merge([]) == [] and merge([SourceResult("s", "v", ())]) == []


@pytest.mark.parametrize("seed", range(10))
def test_the_record_of_a_merge_is_the_record_of_its_rows(seed: int) -> None:
    """The record's candidate table built from the merge's typed columns (no per-element
    validation) serialises byte for byte as the one validated from rows."""
    rng = random.Random(seed)
    results = [_answer(rng, name, 400, rng.randint(1, 200)) for name in ("two_tower", "trending", "fresh")]
    merged = merge(results)
    rows = CandidateBatch([c.item_id for c in merged], [c.provenance for c in merged])
    assert merged.typed_provenance and not rows.typed_provenance
    kept = merged.take(sorted(rng.sample(range(len(merged)), len(merged) // 2)))
    scored = ScoredBatch(kept, {"click": [rng.random() for _ in kept], "like": [float(rng.randint(0, 1)) for _ in kept]},
                         [rng.random() for _ in kept])  # fmt: skip
    fast, checked = candidate_table(merged, scored), candidate_table(rows, scored)
    assert fast.model_dump_json() == checked.model_dump_json()
    assert CandidateTable.model_validate(fast.model_dump()) == checked


@pytest.mark.parametrize("seed", range(6))
def test_a_record_serialises_as_pydantic_does(seed: int) -> None:
    """:func:`core.contracts.decision_json` (the stored and served JSON) is
    ``model_dump_json`` byte for byte: for a table built from the merge's columns and one
    validated from rows, scored by a view of the ranker's columns, with a NaN, unscored rows,
    and integral floats."""
    rng = random.Random(seed)
    results = [_answer(rng, name, 400, rng.randint(1, 200)) for name in ("two_tower", "trending", "fresh")]
    merged = merge(results)
    rows = CandidateBatch([c.item_id for c in merged], [c.provenance for c in merged])
    kept = merged.take(sorted(rng.sample(range(len(merged)), len(merged) // 2)))
    click = [rng.random() for _ in kept]
    click[0], click[-1] = float("nan"), float("-inf")
    scored = ScoredBatch(kept, {"click": click, "like": [float(rng.randint(0, 1)) for _ in kept]},
                         [rng.random() * 1e-6 for _ in kept]).take(list(range(0, len(kept), 2)))  # fmt: skip
    for table in (candidate_table(merged, scored), candidate_table(rows, scored)):
        record = DecisionRecord(
            request_id=f"r{seed}", tenant_id="acme", user_id="u\"1", surface="home", k=10,
            at=datetime(2026, 12, 1, 12, tzinfo=UTC), experiment={"id": "", "arm": "default"},
            versions={"ranker": "r1"}, sources=[SourceOutcome(source="two_tower", status="ok", latency_ms=0.25)],
            candidates=table, removals=[RemovalRecord(item_id="i1", rule="hidden", reason="hidden_by_user")],
            slate=[SlateRecord(item_id="i2", rank=0, score=0.5, sources=["fresh"], reasons=["utility_rank:0"])],
            stage_latency_ms={"total": 1.5}, degraded=["x"])  # fmt: skip
        assert decision_json(record) == record.model_dump_json()
        assert decision_bytes(record) == record.model_dump_json().encode()
