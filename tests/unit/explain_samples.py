"""A hand-built decision record with everything an explain page shows: two sources (one timed
out), removals by two rules, a slate whose order differs from the utility order (diversity and
exploration), and hostile ids that must come out escaped."""

from __future__ import annotations

from datetime import UTC, datetime

from core.contracts import (
    CandidateTable,
    DecisionRecord,
    RemovalRecord,
    SlateRecord,
    SourceOutcome,
)

HOSTILE = '<script>alert("x")</script>'


def sample_record(
    *, tenant: str = "acme", surface: str = "home", request_id: str = "req-1",
    user_id: str = "u-42", hostile: bool = False,
) -> DecisionRecord:  # fmt: skip
    odd = HOSTILE if hostile else "i-odd"
    items = ["i-1", "i-2", "i-3", odd, "i-5", "i-6"]
    utility = [0.9, 0.8, 0.7, 0.6, None, None]  # i-5 and i-6 were removed before ranking
    return DecisionRecord(
        request_id=request_id,
        tenant_id=tenant,
        user_id=user_id,
        surface=surface,
        k=3,
        at=datetime(2026, 12, 1, 4, 0, tzinfo=UTC),
        experiment={"id": "exp-slate", "arm": "mmr"},
        versions={"two_tower": "tt-7", "ann_index": "idx-7", "ranker": "rk-3", "config": "cfg-9"},
        sources=[
            SourceOutcome(source="two_tower", status="ok", candidates=5, latency_ms=4.25),
            SourceOutcome(source="trending", status="ok", candidates=3, latency_ms=0.5),
            SourceOutcome(
                source="co_visit", status="timeout", latency_ms=20.0, error="no answer in 20 ms"
            ),  # fmt: skip
        ],
        candidates=CandidateTable(
            item_id=items,
            utility=utility,
            task_scores={
                "click": [0.3, 0.25, 0.2, 0.15, None, None],
                "purchase": [0.05, 0.04, 0.03, 0.02, None, None],
            },
            provenance_row=[0, 0, 1, 2, 3, 4, 5],
            provenance_source=[
                "two_tower",
                "trending",
                "two_tower",
                "two_tower",
                "trending",
                "two_tower",
                "trending",
            ],  # fmt: skip
            provenance_version=["tt-7", "t-1", "tt-7", "tt-7", "t-1", "tt-7", "t-1"],
            provenance_score=[0.8, 12.0, 0.7, 0.6, 5.0, 0.5, 3.0],
            provenance_rank=[0, 0, 1, 2, 1, 3, 2],
        ),
        removals=[
            RemovalRecord(item_id="i-5", rule="availability", reason="unavailable"),
            RemovalRecord(item_id="i-6", rule="hidden", reason="hidden_by_user"),
        ],
        slate=[
            SlateRecord(
                item_id="i-1",
                rank=0,
                score=0.9,
                sources=["two_tower", "trending"],
                reasons=["utility_rank:0"],
            ),  # fmt: skip
            SlateRecord(
                item_id="i-3",
                rank=1,
                score=0.7,
                sources=["two_tower"],
                reasons=["utility_rank:2", "mmr_diversity"],
            ),  # fmt: skip
            SlateRecord(
                item_id=odd,
                rank=2,
                score=0.6,
                sources=["trending"],
                reasons=["exploration", "propensity:0.05"],
                propensity=0.05,
            ),  # fmt: skip
        ],
        stage_latency_ms={
            "sources": 20.5,
            "rules": 0.4,
            "ranker": 3.1,
            "slate": 0.2,
            "total": 25.0,
        },  # fmt: skip
        degraded=["source_timeout:co_visit"],
    )
