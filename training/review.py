"""Launch review: automatic checks on the candidate versions, and recorded human approval.

    python -m training.review --config configs/train/pipeline.yaml --tenant T
    python -m training.review --config configs/train/pipeline.yaml --tenant T --approve --actor NAME

Checks (each recorded in a :class:`core.manifest.ReviewRecord`): metrics present; key metrics
not worse than production beyond ``review.tolerance`` (relative; skipped, and said so, when
production was trained on another feature schema, whose metrics are not comparable); the index's recall@100 at
least ``review.min_index_recall_at_100``; the index's ``item_tower_version`` is the two-tower
candidate; every candidate's ``feature_schema_hash`` is the running code's. ``--approve``
records an approval only when every check passes. Exit code 0 = all checks pass.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from core.config import load_model, resolve_uri
from core.features import feature_schema_hash
from core.manifest import Manifest, ReviewRecord
from core.train_config import PipelineConfig, ReviewConfig
from training import common

KINDS = ("two_tower", "ann_index", "ranker")
KEY_METRICS = {
    "two_tower": ("val_recall@50", "val_ndcg@10"),
    "ann_index": ("recall@10", "recall@100"),
    "ranker": ("click_auc", "like_auc"),
}


def check_candidate(m: Manifest, production: Manifest | None, two_tower_candidate: str | None, cfg: ReviewConfig) -> dict[str, dict]:
    """Name -> ``{"ok": bool, "detail": str}`` for one candidate manifest."""
    checks: dict[str, dict] = {}
    missing = [k for k in KEY_METRICS[m.kind] if not isinstance(m.metrics.get(k), int | float)]
    checks["metrics_present"] = {"ok": not missing, "detail": f"missing {missing}" if missing else "ok"}
    if production is None:
        checks["not_worse_than_production"] = {"ok": True, "detail": "no production version"}
    elif production.lineage.feature_schema_hash != m.lineage.feature_schema_hash:
        # Validation metrics of models on different feature definitions measure different
        # inputs (and the two-tower's in-loop monitor excludes the query's history, whose
        # contents the definition sets): not comparable. The approver compares them offline.
        checks["not_worse_than_production"] = {
            "ok": True,
            "detail": f"not comparable: production {production.version} has feature schema "
            f"{production.lineage.feature_schema_hash}; compare with training.evaluate",
        }
    else:
        worse = []
        for k in KEY_METRICS[m.kind]:
            new, old = m.metrics.get(k), production.metrics.get(k)
            if isinstance(new, int | float) and isinstance(old, int | float) and new < old * (1 - cfg.tolerance):
                worse.append(f"{k} {new:.4f} < {old:.4f}")
        checks["not_worse_than_production"] = {"ok": not worse, "detail": "; ".join(worse) or f"vs {production.version}"}
    schema = m.lineage.feature_schema_hash
    checks["feature_schema_hash"] = {"ok": schema == feature_schema_hash(), "detail": f"{schema} vs code {feature_schema_hash()}"}
    if m.kind == "ann_index":
        recall = m.metrics.get("recall@100")
        checks["index_recall"] = {
            "ok": isinstance(recall, int | float) and recall >= cfg.min_index_recall_at_100,
            "detail": f"recall@100 {recall} (min {cfg.min_index_recall_at_100})",
        }
        tower = m.config.get("item_tower_version")
        checks["index_matches_two_tower"] = {"ok": tower is not None and tower == two_tower_candidate, "detail": f"index {tower} vs two_tower candidate {two_tower_candidate}"}
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="launch review of the candidate versions")
    parser.add_argument("--config", default="configs/train/pipeline.yaml")
    parser.add_argument("--tenant")
    parser.add_argument("--kind", choices=KINDS, action="append", help="default: all")
    parser.add_argument("--approve", action="store_true")
    parser.add_argument("--actor", default=None, help="who approves (required with --approve)")
    parser.add_argument("--comment", default="")
    parser.add_argument("--smoke-test", action="store_true", help="accepted for symmetry; no effect")
    args = parser.parse_args(argv)
    if args.approve and not args.actor:
        parser.error("--approve needs --actor NAME")
    pcfg = load_model(resolve_uri(args.config), PipelineConfig)
    tenant = args.tenant or pcfg.tenant
    from core.train_config import JobConfig

    storage = common.Storage(JobConfig(tenant=tenant))
    registry = storage.registry()
    tt_candidate = registry.resolve("two_tower", tenant, "candidate")
    all_ok = True
    rows = []
    for kind in args.kind or KINDS:
        version = registry.resolve(kind, tenant, "candidate")
        if version is None:
            rows.append((kind, "no candidate"))
            all_ok = False
            continue
        m = registry.manifest(kind, tenant, version)
        prod_v = registry.resolve(kind, tenant, "production")
        prod = registry.manifest(kind, tenant, prod_v) if prod_v and prod_v != version else None
        checks = check_candidate(m, prod, tt_candidate, pcfg.review)
        ok = all(c["ok"] for c in checks.values())
        all_ok &= ok
        now = datetime.now(UTC)
        registry.add_review(ReviewRecord(kind=kind, tenant=tenant, version=version, at=now, actor="launch-review", decision="note", checks=checks, comment="automatic checks " + ("passed" if ok else "FAILED")))
        if args.approve and ok:
            registry.add_review(ReviewRecord(kind=kind, tenant=tenant, version=version, at=now, actor=args.actor, decision="approve", checks=checks, comment=args.comment))
        for name, c in checks.items():
            rows.append((f"{kind} {version} {name}", ("PASS " if c["ok"] else "FAIL ") + c["detail"]))
        if args.approve:
            rows.append((f"{kind} {version}", f"approved by {args.actor}" if ok else "NOT approved: checks failed"))
    common.summary_table(f"launch review {tenant}", rows)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
