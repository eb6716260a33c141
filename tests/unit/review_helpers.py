"""Launch review for test artifacts, the way a release goes through it (no shortcut past the gate).

Test registries hold toy versions; :func:`reviewable` gives them the metrics and lineage the
automatic checks read, and :func:`approve` runs ``training.review.review_versions``: the
automatic checks, every sign-off of the kind's checklist by a named reviewer, the approval.
"""

from __future__ import annotations

from core.features import feature_schema_hash
from core.manifest import Lineage
from core.registry import Registry
from core.train_config import ReviewConfig

METRICS = {
    "two_tower": {"val_recall@50": 0.30, "val_ndcg@10": 0.10},
    "ranker": {"click_auc": 0.70, "like_auc": 0.65},
}


def reviewable(kind: str) -> dict:
    """``publish`` keyword arguments that pass the automatic checks of ``kind``."""
    return {"metrics": METRICS[kind], "lineage": Lineage(feature_schema_hash=feature_schema_hash())}


def approve(registry: Registry, kind: str, tenant: str, version: str, actor: str = "rita") -> None:
    from training.review import review_versions

    sign_offs = registry.policy.checklist(kind).sign_offs
    blocking = review_versions(registry, tenant, {kind: version}, ReviewConfig(), actor=actor,
                               sign_offs=sign_offs, approve=True)  # fmt: skip
    last = registry.reviews(kind, tenant, version)[-1]
    assert (last.decision, last.actor) == ("approve", actor), blocking
