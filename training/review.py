"""Launch review: the launch checklist of the candidate versions — automatic checks where the
data exists, recorded sign-offs for the human items — and the recorded approval or rejection.

    python -m training.review --config configs/train/pipeline.yaml --tenant T
    python -m training.review ... --tenant T --sign-off privacy_review --actor NAME
    python -m training.review ... --tenant T --approve --actor NAME
    python -m training.review ... --tenant T --reject --actor NAME --comment WHY

The checklist per kind is ``configs/promotion.yaml`` (:mod:`core.promotion`). Automatic checks,
each tagged with the checklist item it covers:

* ``offline_metrics``: key metrics present; not worse than production beyond
  ``review.tolerance`` (relative; skipped, and said so, when production was trained on another
  feature schema, whose metrics are not comparable); the index's recall@100 at least
  ``review.min_index_recall_at_100``.
* ``feature_compatibility``: every candidate's ``feature_schema_hash`` is the running code's;
  the index and the item embeddings were built from the two-tower candidate.

Every run records the automatic results (a ``note``). ``--sign-off ITEM`` (repeatable) records
that ``--actor`` has done a human item. ``--approve`` records an approval only when every
automatic check passes and every sign-off of the kind's checklist is recorded; otherwise it
says what is missing. Promotion (``recsys registry promote``) checks the same records. Exit
code 0 = all checks pass (and, with ``--approve``, every candidate approved).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from core.config import load_model, resolve_uri
from core.features import feature_schema_hash
from core.manifest import Manifest, ReviewRecord
from core.promotion import CHECKLIST_ITEMS, gate_problems
from core.registry import Registry
from core.train_config import PipelineConfig, ReviewConfig
from training import common

KINDS = ("two_tower", "item_embeddings", "ann_index", "ranker")
KEY_METRICS = {
    "two_tower": ("val_recall@50", "val_ndcg@10"),
    "item_embeddings": ("items", "dim"),
    "ann_index": ("recall@10", "recall@100"),
    "ranker": ("click_auc", "like_auc"),
}
SYSTEM_KINDS = ("two_tower", "ranker")
"""Kinds whose candidates change what the pipeline serves: the whole-pipeline replay
(:mod:`training.system_review`) is part of their review."""
NOT_COMPARED = {"item_embeddings": "sizes, not quality: the index's recall covers them"}


def _check(ok: bool, detail: str, item: str) -> dict:
    return {"ok": bool(ok), "detail": detail, "item": item}


def check_candidate(m: Manifest, production: Manifest | None, two_tower_candidate: str | None, cfg: ReviewConfig) -> dict[str, dict]:
    """Name -> ``{"ok": bool, "detail": str, "item": checklist item}`` for one candidate."""
    checks: dict[str, dict] = {}
    missing = [k for k in KEY_METRICS[m.kind] if not isinstance(m.metrics.get(k), int | float)]
    checks["metrics_present"] = _check(not missing, f"missing {missing}" if missing else "ok", "offline_metrics")
    if m.kind in NOT_COMPARED:
        checks["not_worse_than_production"] = _check(True, f"not compared: {NOT_COMPARED[m.kind]}", "offline_metrics")
    elif production is None:
        checks["not_worse_than_production"] = _check(True, "no production version", "offline_metrics")
    elif production.lineage.feature_schema_hash != m.lineage.feature_schema_hash:
        # Validation metrics of models on different feature definitions measure different
        # inputs (and the two-tower's in-loop monitor excludes the query's history, whose
        # contents the definition sets): not comparable. The approver compares them offline.
        checks["not_worse_than_production"] = _check(
            True,
            f"not comparable: production {production.version} has feature schema "
            f"{production.lineage.feature_schema_hash}; compare with training.evaluate",
            "offline_metrics",
        )
    else:
        worse = []
        for k in KEY_METRICS[m.kind]:
            new, old = m.metrics.get(k), production.metrics.get(k)
            if isinstance(new, int | float) and isinstance(old, int | float) and new < old * (1 - cfg.tolerance):
                worse.append(f"{k} {new:.4f} < {old:.4f}")
        checks["not_worse_than_production"] = _check(not worse, "; ".join(worse) or f"vs {production.version}", "offline_metrics")
    schema = m.lineage.feature_schema_hash
    checks["feature_schema_hash"] = _check(schema == feature_schema_hash(), f"{schema} vs code {feature_schema_hash()}", "feature_compatibility")
    if m.kind == "ann_index":
        recall = m.metrics.get("recall@100")
        checks["index_recall"] = _check(
            isinstance(recall, int | float) and recall >= cfg.min_index_recall_at_100,
            f"recall@100 {recall} (min {cfg.min_index_recall_at_100})",
            "offline_metrics",
        )
    if m.kind in ("ann_index", "item_embeddings"):
        tower = m.config.get("item_tower_version")
        checks["built_from_two_tower_candidate"] = _check(
            tower is not None and tower == two_tower_candidate,
            f"{m.kind} {tower} vs two_tower candidate {two_tower_candidate}",
            "feature_compatibility",
        )
    return checks


def review_versions(
    registry: Registry,
    tenant: str,
    versions: dict[str, str],
    cfg: ReviewConfig,
    *,
    actor: str | None = None,
    sign_offs: tuple[str, ...] = (),
    approve: bool = False,
    reject: bool = False,
    comment: str = "",
    system_checks: dict[str, dict[str, dict]] | None = None,
) -> dict[str, list[str]]:
    """Run the launch review of ``versions`` (kind -> version; the two-tower among them is the
    one the index must be built from) and record it: the automatic results, then ``actor``'s
    sign-offs, then the approval (when nothing is missing) or rejection.

    ``system_checks``: kind -> the whole-pipeline checks it answers for
    (:func:`training.system_review.checks_by_kind`).

    Returns kind -> what still blocks promotion (empty: approved and promotable): what an
    approval would lack, else what the gate says now (e.g. "no recorded approval", a freeze).
    """
    if (approve or reject or sign_offs) and not actor:
        raise ValueError("sign-offs, approvals and rejections need an actor")
    unknown = set(sign_offs) - set(CHECKLIST_ITEMS)
    if unknown:
        raise ValueError(f"unknown checklist items {sorted(unknown)}; expected {', '.join(CHECKLIST_ITEMS)}")
    tt_version = versions.get("two_tower") or registry.resolve("two_tower", tenant, "candidate")
    out = {}
    for kind, version in versions.items():
        m = registry.manifest(kind, tenant, version)
        prod_v = registry.resolve(kind, tenant, "production")
        prod = registry.manifest(kind, tenant, prod_v) if prod_v and prod_v != version else None
        checks = check_candidate(m, prod, tt_version, cfg)
        if system_checks and kind in system_checks:
            checks.update(system_checks[kind])
        ok = all(c["ok"] for c in checks.values())

        def record(decision: str, who: str, m: Manifest = m, **kw) -> None:
            kw.setdefault("comment", comment)
            registry.add_review(ReviewRecord(kind=m.kind, tenant=tenant, version=m.version, at=datetime.now(UTC),
                                             actor=who, decision=decision, **kw))  # fmt: skip

        record("note", "launch-review", checks=checks, comment="automatic checks " + ("passed" if ok else "FAILED"))
        for item in sign_offs:
            record("sign_off", actor, item=item)
        if reject:
            record("reject", actor, checks=checks)
        checklist = registry.policy.checklist(kind)
        # What an approval given now would still lack: the automatic results just recorded,
        # and the sign-offs on record.
        pending = [ReviewRecord(kind=kind, tenant=tenant, version=version, at=datetime.now(UTC),
                                actor=actor or "-", decision="approve", checks=checks)]  # fmt: skip
        blocking = gate_problems(registry.reviews(kind, tenant, version) + pending, checklist)
        if approve and not blocking:
            record("approve", actor, checks=checks)
        out[kind] = blocking if blocking and not reject else registry.promotion_problems(kind, tenant, version)
    return out


def _system_review(tenant: str, versions: dict[str, str], registry: Registry, pcfg: PipelineConfig) -> dict[str, dict[str, dict]] | None:
    """Kind -> the whole-pipeline checks of the candidate set (:mod:`training.system_review`)
    it answers for: the candidates where given, production for the kinds not under review."""
    cfg = pcfg.review.system
    if not cfg.enabled:
        return None
    from core.train_config import EvaluateConfig
    from training.system_review import checks_by_kind, replay, review_system, stage_table

    def resolve(given: dict[str, str], *aliases: str) -> dict[str, str] | None:
        out = {k: given.get(k) or next((v for a in aliases if (v := registry.resolve(k, tenant, a))), None)
               for k in ("two_tower", "ann_index", "ranker")}  # fmt: skip
        if not out["two_tower"] or not out["ann_index"]:
            return None
        return {k: v for k, v in out.items() if v}

    under_review = set(versions) & set(SYSTEM_KINDS)
    # A kind not under review serves as production does; a first launch (nothing in
    # production) replays with the other candidates.
    candidate = resolve(versions, "production", "candidate")
    production = resolve({}, "production")
    if candidate is None:
        # The replay retrieves with the two-tower; a tenant without one has nothing to replay.
        skipped = {"system_replay": {"ok": True, "item": "offline_metrics",
                                     "detail": "not replayed: no two-tower and index (candidate or production)"}}  # fmt: skip
        return {k: skipped for k in under_review}
    evaluate_cfg = load_model(resolve_uri(cfg.evaluate), EvaluateConfig).model_copy(update={"tenant": tenant})
    common.init_ray()
    storage = common.JobStorage(evaluate_cfg)
    prod_versions = production if production != candidate else None
    _, cand, prod = review_system(storage, candidate, prod_versions, cfg, evaluate_cfg)
    retrieval = None
    if "two_tower" in under_review and prod is not None:
        # The two-tower answers for what it serves with production's ranker (or none).
        own = {k: v for k, v in candidate.items() if k != "ranker"}
        if production.get("ranker"):
            own["ranker"] = production["ranker"]
        if own != candidate:
            retrieval = replay(storage, evaluate_cfg, own, cfg)
            common.console.print(stage_table(retrieval, prod, f"launch review {tenant}: the two-tower candidate with "
                                                              "production's ranker, vs production"))  # fmt: skip
    return checks_by_kind(under_review, cand, prod, retrieval, cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="launch review of the candidate versions")
    parser.add_argument("--config", default="configs/train/pipeline.yaml")
    parser.add_argument("--tenant")
    parser.add_argument("--kind", choices=KINDS, action="append", help="default: all")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve if nothing is missing")
    decision.add_argument("--reject", action="store_true", help="record a rejection (--comment why)")
    parser.add_argument("--sign-off", action="append", default=[], choices=CHECKLIST_ITEMS, metavar="ITEM",
                        help=f"record a human checklist item as done (repeatable): {', '.join(CHECKLIST_ITEMS)}")  # fmt: skip
    parser.add_argument("--actor", default=None, help="who reviews (required to sign off, approve or reject)")
    parser.add_argument("--comment", default="")
    parser.add_argument("--smoke-test", action="store_true", help="accepted for symmetry; no effect")
    args = parser.parse_args(argv)
    if (args.approve or args.reject or args.sign_off) and not args.actor:
        parser.error("--approve, --reject and --sign-off need --actor NAME")
    pcfg = load_model(resolve_uri(args.config), PipelineConfig)
    tenant = args.tenant or pcfg.tenant
    from core.train_config import JobConfig

    registry = common.JobStorage(JobConfig(tenant=tenant)).registry()
    rows = []
    versions = {}
    for kind in args.kind or KINDS:
        version = registry.resolve(kind, tenant, "candidate")
        if version is None:
            rows.append((kind, "no candidate"))
        else:
            versions[kind] = version
    all_ok = len(versions) == len(args.kind or KINDS)
    system = _system_review(tenant, versions, registry, pcfg) if set(versions) & set(SYSTEM_KINDS) else None
    blocking = review_versions(registry, tenant, versions, pcfg.review, actor=args.actor, sign_offs=tuple(args.sign_off),
                               approve=args.approve, reject=args.reject, comment=args.comment,
                               system_checks=system)  # fmt: skip
    for kind, version in versions.items():
        notes = [r for r in registry.reviews(kind, tenant, version) if r.decision == "note"]
        checks = notes[-1].checks
        all_ok &= all(c["ok"] for c in checks.values())
        for name, c in checks.items():
            rows.append((f"{kind} {version} {name} [{c['item']}]", ("PASS " if c["ok"] else "FAIL ") + c["detail"]))
        status = "; ".join(blocking[kind]) or "approved: may be promoted"  # fmt: skip
        rows.append((f"{kind} {version} gate", status))
    if args.approve:
        all_ok &= not any(blocking.values())
    common.summary_table(f"launch review {tenant}", rows)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
