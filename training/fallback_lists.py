"""Generate, validate and publish a tenant's safe fallback lists (artifact kind ``fallback_list``).

    python -m training.fallback_lists --config configs/train/fallback_lists.yaml [--tenant T]

For each surface (default: all of the tenant's) and each maturity segment (``general``,
``teen``, ``mature``, and ``default`` for users whose limit is unknown: the policy's
``default_max_maturity``), the list is the surface's most popular items over the last
``window_days`` of the log (positive events on that surface, or without a surface) that pass
the tenant's eligibility rules for a user of that segment, ``size`` at most.

Validation, recorded as the version's automatic launch check (``safety_guardrails``): every
list passes the tenant's rule chain again, built afresh, item by item, for its segment (no
blocked, unavailable, unknown or too-mature item); none is shorter than ``min_items``; no
duplicates. A valid version is approved and promoted by this job (``configs/promotion.yaml``);
serving uses the production list when policy data cannot be read (``serving/pipeline.py``), and
``RecsysFallbackListExpiring`` fires a day before its ``expires_at``
(``docs/runbooks/fallback-list-expiring.md``). Exit status 1 when validation fails (the old
production list keeps serving until it expires).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from core.config import PlatformConfig, TenantConfig, load_platform_config
from core.contracts import Candidate, MergedCandidate, Query
from core.schema import MATURITY_LEVELS, POSITIVE_EVENT_TYPES
from core.train_config import FallbackListsConfig
from serving.fallback_list import DEFAULT_SEGMENT, LISTS_FILE
from training import common

ACTOR = "training.fallback_lists"


def popular_items(events: pa.Table, surface: str, window_days: float) -> list[str]:
    """Items by positive events on ``surface`` (or with no surface) in the last ``window_days``
    of the log, most first (ties by item id, so a run is reproducible); then, for a surface
    with little data of its own (a new email surface), the tenant's other popular items."""
    if events.num_rows == 0:
        return []
    ts = pc.cast(pc.cast(events["ts"], pa.timestamp("us", tz="UTC")), pa.int64())
    start = pc.max(ts).as_py() - int(window_days * 86_400e6)
    recent = events.filter(pc.and_(pc.is_in(events["event_type"], pa.array(sorted(POSITIVE_EVENT_TYPES))),
                                   pc.greater_equal(ts, start)))  # fmt: skip
    on_surface = pc.fill_null(pc.equal(recent["surface"], surface), True)

    def ranked(rows: pa.Table) -> list[str]:
        counts = Counter(rows["item_id"].to_pylist())
        return [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    return list(dict.fromkeys(ranked(recent.filter(on_surface)) + ranked(recent)))


def _state(segment: str):
    from serving.user_state import ServingUserState

    return ServingUserState(user_id=f"fallback-list:{segment}", max_maturity=None if segment == DEFAULT_SEGMENT else segment)


def eligible(rules, tenant: str, surface: str, segment: str, items: list[str], now: datetime) -> tuple[list[str], list]:
    """``items`` the rule chain keeps for a user of ``segment`` (order kept), and the removals."""
    query = Query(request_id=f"fallback-list-{surface}-{segment}", tenant_id=tenant, user_id=f"fallback-list:{segment}",
                  surface=surface, k=len(items), now=now)  # fmt: skip
    cands = [MergedCandidate(i, (Candidate(i, "fallback_list", "generate", 1.0, r),)) for r, i in enumerate(items)]
    result = rules.apply(query, cands, _state(segment))
    return [c.item_id for c in result.kept], list(result.removed)


def generate(platform: PlatformConfig, tenant: TenantConfig, catalogue, events: pa.Table, cfg: FallbackListsConfig,
             now: datetime) -> dict[str, dict[str, list[str]]]:  # fmt: skip
    from ranking.rules import RuleChain

    rules = RuleChain.from_policy(tenant.policy, catalogue)
    out: dict[str, dict[str, list[str]]] = {}
    for surface in cfg.surfaces or list(tenant.surfaces):
        popular = popular_items(events, surface, cfg.window_days)
        out[surface] = {}
        for segment in (*MATURITY_LEVELS, DEFAULT_SEGMENT):
            kept, _ = eligible(rules, tenant.id, surface, segment, popular, now)
            out[surface][segment] = kept[: cfg.size]
    return out


def validate(tenant: TenantConfig, catalogue, lists: dict[str, dict[str, list[str]]], cfg: FallbackListsConfig,
             now: datetime) -> dict[str, dict]:  # fmt: skip
    """The automatic checks (``{"ok", "detail", "item"}`` each), the rule chain built afresh."""
    from ranking.rules import RuleChain

    rules = RuleChain.from_policy(tenant.policy, catalogue)
    removed, short, dupes = [], [], []
    for surface, per_segment in lists.items():
        for segment, items in per_segment.items():
            _, rem = eligible(rules, tenant.id, surface, segment, items, now)
            removed += [f"{surface}/{segment}: {r.item_id} {r.reason}" for r in rem]
            if len(items) < cfg.min_items:
                short.append(f"{surface}/{segment}: {len(items)}")
            if len(set(items)) != len(items):
                dupes.append(f"{surface}/{segment}")
    def check(ok: bool, detail: str) -> dict:
        return {"ok": ok, "detail": detail, "item": "safety_guardrails"}

    return {
        "passes_tenant_rules": check(not removed, "; ".join(removed[:5]) or "every item of every list kept"),
        "long_enough": check(not short, ", ".join(short) or f"every list has at least {cfg.min_items} items"),
        "no_duplicates": check(not dupes, ", ".join(dupes) or "none"),
    }


def main(argv=None) -> int:
    from core.manifest import ReviewRecord
    from training.quality_checks import users_table

    args = common.parse_args(__doc__.splitlines()[0], "configs/train/fallback_lists.yaml", argv)
    cfg = common.load_job_config(args, FallbackListsConfig)
    t0 = time.perf_counter()
    storage = common.JobStorage(cfg)
    platform = load_platform_config(cfg.platform_config)
    tenant = platform.tenant(cfg.tenant)
    unknown = [s for s in cfg.surfaces if s not in tenant.surfaces]
    if unknown:
        raise ValueError(f"fallback_lists: tenant {cfg.tenant!r} has no surface {unknown[0]!r}; it has {', '.join(tenant.surfaces)}")
    catalogue = storage.catalogue()
    events = storage.eventlog().read(cfg.tenant, columns=["item_id", "event_type", "ts", "surface"])
    now = datetime.now(UTC)
    lists = generate(platform, tenant, catalogue, events, cfg, now)
    checks = validate(tenant, catalogue, lists, cfg, now)
    failed = [k for k, c in checks.items() if not c["ok"]]
    users = users_table(storage.data, cfg.tenant)
    segments_seen = sorted(set(users["max_maturity"].to_pylist())) if users is not None else []
    expires = now + timedelta(hours=cfg.ttl_hours)
    registry = storage.registry()
    with tempfile.TemporaryDirectory() as out:
        (Path(out) / LISTS_FILE).write_text(json.dumps({"lists": lists}, indent=2, sort_keys=True))
        manifest = registry.publish(
            "fallback_list", cfg.tenant, out, owner=common.owner(cfg), lineage=common.lineage(storage),
            metrics={f"items:{s}/{g}": len(v) for s, per in lists.items() for g, v in per.items()},
            config={"expires_at": expires.isoformat(), "generated_at": now.isoformat(), "surfaces": list(lists),
                    "segments": [*MATURITY_LEVELS, DEFAULT_SEGMENT], "segments_in_users": segments_seen,
                    "job": cfg.model_dump(mode="json")},
            description=f"safe fallback lists of {cfg.tenant}: popular and eligible, {cfg.window_days:g} days",
        )  # fmt: skip
    review = dict(kind="fallback_list", tenant=cfg.tenant, version=manifest.version, actor=ACTOR, checks=checks)
    registry.add_review(ReviewRecord(at=datetime.now(UTC), decision="note", comment="validation " + ("FAILED" if failed else "passed"), **review))
    if not failed and cfg.promote:
        registry.add_review(ReviewRecord(at=datetime.now(UTC), decision="approve", **review))
        registry.promote("fallback_list", cfg.tenant, manifest.version, actor=ACTOR, reason="generated and validated")
    status = "production" if not failed and cfg.promote else f"candidate ({', '.join(failed) or 'promote: false'})"
    rows = [(f"{s} / {g}", f"{len(v)} items: {', '.join(v[:5])}{' …' if len(v) > 5 else ''}") for s, per in lists.items() for g, v in per.items()]
    rows += [(f"check {k}", ("PASS " if c["ok"] else "FAIL ") + c["detail"]) for k, c in checks.items()]
    rows += [("expires at", expires.isoformat(timespec="seconds")), ("owner", f"{manifest.owner.team} ({manifest.owner.primary})"),
             ("seconds", time.perf_counter() - t0)]  # fmt: skip
    common.summary_table(f"fallback_lists {cfg.tenant}: fallback_list {manifest.version} → {status}", rows)
    print(f"published fallback_list {cfg.tenant} {manifest.version}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
