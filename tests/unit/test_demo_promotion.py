"""`make demo`'s step 4 on a toy registry: the launch review (with its whole-pipeline checks)
and the promotion that follows. On `tiny` the toy ranker serves worse slates than the
retriever alone; the review must refuse the ranker, not the two-tower, and the demo must still
put the two-tower and its index in production (serving ranks in the fallback order)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.demo import promote_reviewed
from core.manifest import Owner
from core.registry import Registry
from core.train_config import ReviewConfig, SystemReviewConfig
from tests.unit.review_helpers import reviewable
from training.review import KINDS, review_versions
from training.system_review import checks_by_kind

OWNER = Owner(team="recs", primary="ada", escalation="#recs-oncall", runbook="r.md")
RETRIEVER = {"expected_ctr@10": 0.0656, "ndcg@10": 0.03}


def _candidates(reg: Registry, tmp_path: Path) -> dict[str, str]:
    def publish(kind: str, **kw) -> str:
        src = tmp_path / kind
        src.mkdir(exist_ok=True)
        (src / "data.bin").write_text(kind)
        return reg.publish(kind, "acme", src, owner=OWNER, **kw).version

    tt = publish("two_tower", **reviewable("two_tower"))
    lineage = reviewable("two_tower")["lineage"]
    built = {"item_tower_version": tt}
    return {
        "two_tower": tt,
        "item_embeddings": publish("item_embeddings", metrics={"items": 400, "dim": 32}, lineage=lineage, config=built),
        "ann_index": publish("ann_index", metrics={"recall@10": 0.99, "recall@100": 0.99}, lineage=lineage, config=built),
        "ranker": publish("ranker", **reviewable("ranker")),
    }


def _review(reg: Registry, versions: dict[str, str], final_slate: dict) -> bool:
    stages = {"retriever": RETRIEVER, "final_slate": final_slate}
    system = checks_by_kind({"two_tower", "ranker"}, stages, None, None, SystemReviewConfig())
    sign_offs = tuple(sorted({s for k in KINDS for s in reg.policy.checklist(k).sign_offs}))
    blocking = review_versions(reg, "acme", versions, ReviewConfig(), actor="make-demo", sign_offs=sign_offs,
                               approve=True, system_checks=system)  # fmt: skip
    return not any(blocking.values())


def test_a_first_launch_whose_ranker_loses_to_the_retriever_serves_the_two_tower(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    versions = _candidates(reg, tmp_path)
    ok = _review(reg, versions, {"expected_ctr@10": 0.0305, "ndcg@10": 0.02})
    assert not ok
    promoted = dict(promote_reviewed(reg, "acme", reviewed_ok=ok))
    assert promoted == {k: versions[k] for k in ("two_tower", "item_embeddings", "ann_index")}
    assert reg.resolve("ranker", "acme", "production") is None  # refused: not served
    assert reg.resolve("two_tower", "acme", "production") == versions["two_tower"]
    note = [r for r in reg.reviews("ranker", "acme", versions["ranker"]) if r.decision == "note"][-1]
    assert not note.checks["system_vs_retriever"]["ok"]
    assert "expected_ctr@10 0.0305 vs retriever 0.0656" in note.checks["system_vs_retriever"]["detail"]


def test_a_first_launch_that_passes_promotes_everything_and_a_worse_rerun_keeps_production(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    versions = _candidates(reg, tmp_path)
    ok = _review(reg, versions, {"expected_ctr@10": 0.08, "ndcg@10": 0.03})
    assert ok
    assert dict(promote_reviewed(reg, "acme", reviewed_ok=ok)) == versions
    # a re-run whose review fails leaves production serving what it served
    assert promote_reviewed(reg, "acme", reviewed_ok=False) == []
    assert {k: reg.resolve(k, "acme", "production") for k in KINDS} == versions


def test_a_first_launch_with_no_approvable_two_tower_stops_the_demo(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    _candidates(reg, tmp_path)  # candidates, but no review recorded: nothing is approved
    with pytest.raises(SystemExit, match="nothing is in production"):
        promote_reviewed(reg, "acme", reviewed_ok=False)
