"""The automatic launch-review checks of a ``tenant_config`` version (``recsys config publish``
runs them and records them as a review note; ``recsys config review --approve`` approves on them)
and of a ``rule_bundle`` version (``recsys rules publish``; :meth:`ConfigReview.bundle_checks`:
the same checks, on the production config with the bundle's rules).

Each check is ``{"ok", "detail", "item"}`` (the checklist item of :mod:`core.promotion` it
covers, as for model reviews):

==========================  ===================================================  ==========================
check                       passes when                                          item
==========================  ===================================================  ==========================
``schema``                  the document validates, alone and merged into the    feature_compatibility
                            platform config
``references_exist``        every source kind needs what exists: a production    feature_compatibility
                            two-tower and index, ``batch_recs`` for a
                            precomputed surface; every pinned ranker version,
                            pinned/editorial and safe-fallback item exists
``safe_fallback``           ``policy.safe_fallback`` is non-empty and every      safety_guardrails
                            item passes the tenant's own rules (new config)
``experiment_arms``         the arms of every enabled experiment cover 100% of   experiment_plan
                            traffic (weights are percentages summing to 100)
``experiment_plans``        every enabled experiment has its plan (hypothesis,   experiment_plan
                            primary metric, guardrails, unit, duration, a
                            control arm): core.experiments.check_experiment_plan
``replay_policy``           recent logged requests (the decision log) replayed   safety_guardrails
                            through the serving pipeline under the new config
                            serve nothing its rules remove, and none fails
``replay_slate_movement``   always (it reports): mean overlap@k of the new and   offline_metrics
                            the production config's slates for the same requests
==========================  ===================================================  ==========================

The replay runs the serving library in process (:func:`serving.served_config.build_served_stages`,
what every Ingress replica runs) with the production models and timeouts raised as offline
evaluation raises them (:func:`training.evaluate_pipeline.offline_platform`). It is
point-in-time: each logged request is answered with the state it saw, as a replica folds it
(the pipelines start from the events before the oldest replayed request, then fold the
events between one request and the next in the serving order of
:func:`core.schema.event_order_keys` before answering it), so an event logged after a request
never changes that request's replayed slate.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from core.catalogue import Catalogue
from core.config import ConfigError, PlatformConfig
from core.contracts import Candidate, DecisionRecord, MergedCandidate, PolicyUnavailable, Query
from core.eventlog import EventLog
from core.manifest import ReviewRecord
from core.promotion import gate_problems
from core.rule_bundle import KIND as RULE_BUNDLE
from core.rule_bundle import RuleBundleDocument, apply_bundle, production_bundle, references_bundle
from core.rule_bundle import load_published as load_bundle
from core.storage import Storage
from core.tenant_config import (
    BOOTSTRAP,
    KIND,
    TenantConfigDocument,
    load_published,
    production_document,
)
from serving.served_config import served_platform

REPLAY_REQUESTS = 200
"""Most recent logged requests a review replays."""


def _check(ok: bool, detail: str, item: str) -> dict:
    return {"ok": bool(ok), "detail": detail, "item": item}


def recent_decisions(decisions_root: str, tenant: str, limit: int) -> list[DecisionRecord]:
    """The tenant's ``limit`` most recent logged decisions (newest first), read from the
    decision log's files (``tenant_id=<t>/date=<d>/part-<lo>-<hi>-*.jsonl``)."""
    store = Storage(decisions_root)
    try:
        dates = [i for i in store.ls(store.path(f"tenant_id={tenant}")) if i.base_name.startswith("date=")]
    except FileNotFoundError:
        return []
    out: list[DecisionRecord] = []
    for date in sorted(dates, key=lambda i: i.base_name, reverse=True):
        parts = [i for i in store.ls(date.path) if i.base_name.startswith("part-") and i.base_name.endswith(".jsonl")]
        for part in sorted(parts, key=lambda i: i.base_name, reverse=True):
            lines = store.read_bytes(part.path).decode().splitlines()
            records = [DecisionRecord.model_validate_json(line) for line in lines if line.strip()]
            out.extend(sorted(records, key=lambda r: r.at, reverse=True))
            if len(out) >= limit:
                return out[:limit]
    return out


class ConfigReview:
    """The tenant's data and production models, loaded once, to check documents against."""

    def __init__(self, platform: PlatformConfig, registry: Any, tenant: str):
        self.platform, self.registry, self.tenant = platform, registry, tenant
        storage = platform.resolved_storage()
        self.storage = storage
        try:
            self.catalogue: Catalogue | None = Catalogue.load(storage.data, tenant)
        except (FileNotFoundError, ValueError, OSError):
            self.catalogue = None
        self._models: Any = None
        self.notes: list[str] = []

    # ---- static checks ---------------------------------------------------------------------

    def checks(self, doc: TenantConfigDocument, version: str, replay: int = REPLAY_REQUESTS) -> dict[str, dict]:
        out: dict[str, dict] = {}
        try:
            served = served_platform(self.platform, self.tenant, doc, None, version,
                                     production_bundle(self.registry, self.tenant))  # fmt: skip
        except ConfigError as exc:
            out["schema"] = _check(False, str(exc)[:500], "feature_compatibility")
            return out
        out["schema"] = _check(True, "document and merged platform config validate", "feature_compatibility")
        missing = self._missing_references(doc)
        out["references_exist"] = _check(not missing, "; ".join(missing) or "all found", "feature_compatibility")
        out["safe_fallback"] = self._safe_fallback(served)
        bad = [f"{e.id}: {sum(v.weight for v in e.variants):g}%" for e in doc.experiments
               if e.enabled and abs(sum(v.weight for v in e.variants) - 100.0) > 1e-6]  # fmt: skip
        out["experiment_arms"] = _check(not bad, ("arms do not cover 100% of traffic: " + ", ".join(bad)) if bad
                                        else f"{sum(e.enabled for e in doc.experiments)} enabled, each 100%",
                                        "experiment_plan")  # fmt: skip
        from core.experiments import check_experiment_plan

        plans = [f"{e.id}.{key}: {msg}" for e in doc.experiments if e.enabled
                 for key, msg in check_experiment_plan(e)]  # fmt: skip
        out["experiment_plans"] = _check(not plans, "; ".join(plans)[:500] or "every enabled experiment has its plan",
                                         "experiment_plan")  # fmt: skip
        out.update(self.replay(served, version, replay))
        return out

    def bundle_checks(self, bundle: RuleBundleDocument, version: str,
                      replay: int = REPLAY_REQUESTS) -> dict[str, dict]:  # fmt: skip
        """The automatic checks of a rule bundle: the production config (else the bootstrap)
        served with the bundle's rules instead of the production bundle's (or its inline ones)."""
        out: dict[str, dict] = {}
        current = production_document(self.registry, self.tenant)
        config_version = current[0] if current else BOOTSTRAP
        try:
            served = served_platform(self.platform, self.tenant, current[1] if current else None, None, config_version)
            served = apply_bundle(served, self.tenant, bundle, f"{RULE_BUNDLE} {version}")
        except ConfigError as exc:
            out["schema"] = _check(False, str(exc)[:500], "feature_compatibility")
            return out
        out["schema"] = _check(True, "bundle validates and applies to the tenant config", "feature_compatibility")
        missing = []
        if not references_bundle(served, self.tenant):
            missing.append(f"the tenant config ({config_version}) does not take its rules from the rule "
                           "bundle (policy.rule_bundle: production): promoting it would change nothing")  # fmt: skip
        if self.catalogue is None:
            missing.append(f"no catalogue for tenant {self.tenant} under {self.storage.data}")
        else:
            unknown = sorted(i for i in bundle.blocked_items if i not in self.catalogue)
            if unknown:
                missing.append(f"blocked items not in the catalogue: {', '.join(unknown[:10])}")
            categories = sorted(set(bundle.blocked_categories) - set(self.catalogue.categories))
            if categories:
                missing.append(f"blocked categories no item has: {', '.join(categories[:10])} "
                               f"(the catalogue's: {', '.join(self.catalogue.categories[:20])})")  # fmt: skip
        out["references_exist"] = _check(not missing, "; ".join(missing) or "all found", "feature_compatibility")
        out["safe_fallback"] = self._safe_fallback(served)
        out.update(self.replay(served, config_version, replay, label=version))
        return out

    def _missing_references(self, doc: TenantConfigDocument) -> list[str]:
        reg, t, missing = self.registry, self.tenant, []
        kinds = {s.kind for surf in doc.surfaces.values() for s in surf.sources}
        kinds |= {s.kind for e in doc.experiments for v in e.variants for s in (v.overrides.sources or [])}
        needs = {"two_tower": ("two_tower", "ann_index"), "precomputed": ("batch_recs",)}
        for kind in sorted(kinds):
            for artifact in needs.get(kind, ()):
                if reg.resolve(artifact, t, "production") is None:
                    missing.append(f"source kind {kind} needs a production {artifact}")
        for e in doc.experiments:
            for v in e.variants:
                pinned = v.overrides.ranker_version
                if pinned and not any(m.version == pinned for m in reg.versions("ranker", t)):
                    missing.append(f"experiment {e.id} arm {v.name}: no ranker version {pinned}")
        items: set[str] = set(doc.policy.safe_fallback)
        for surf in doc.surfaces.values():
            for s in (*surf.sources, *surf.slate.steps):
                items |= set(getattr(s, "items", None) or [])
        if self.catalogue is None:
            missing.append(f"no catalogue for tenant {t} under {self.storage.data}")
        else:
            unknown = sorted(i for i in items if isinstance(i, str) and i not in self.catalogue)
            if unknown:
                missing.append(f"items not in the catalogue: {', '.join(unknown[:10])}")
        return missing

    def _safe_fallback(self, served: PlatformConfig) -> dict:
        from ranking.rules import RuleChain
        from serving.user_state import ServingUserState

        policy = served.tenant(self.tenant).policy
        items = list(dict.fromkeys(policy.safe_fallback))
        if not items:
            return _check(False, "policy.safe_fallback is empty: fail-closed requests would get a 503",
                          "safety_guardrails")  # fmt: skip
        chain = RuleChain.from_policy(policy, self.catalogue)
        merged = [MergedCandidate(i, (Candidate(i, "safe_fallback", "config", 1.0, r),)) for r, i in enumerate(items)]
        removed: list[str] = []
        for surface in served.tenant(self.tenant).surfaces:
            query = Query(request_id="config-review", tenant_id=self.tenant, user_id="_review",
                          surface=surface, k=len(items), now=datetime.now(UTC))  # fmt: skip
            try:
                result = chain.apply(query, merged, ServingUserState(user_id="_review"))
            except PolicyUnavailable as exc:
                return _check(False, f"the rules cannot be evaluated: {exc}", "safety_guardrails")
            removed += [f"{r.item_id} ({r.reason}, {surface})" for r in result.removed]
        if removed:
            return _check(False, "safe fallback items the tenant's rules remove: " + ", ".join(removed[:10]),
                          "safety_guardrails")  # fmt: skip
        return _check(True, f"{len(items)} items, all pass the rules on every surface", "safety_guardrails")

    # ---- replay ------------------------------------------------------------------------------

    def _loaded_models(self) -> Any:
        """The production models as :class:`serving.assembly.TenantModels` (loaded once)."""
        if self._models is None:
            from retrieval.similarity import for_ranker
            from serving.assembly import TenantModels
            from serving.fallback_list import load_fallback_list
            from serving.loaders import load_ranker_model, load_two_tower, two_tower_key

            reg, t = self.registry, self.tenant
            from serving.loaders import Refused

            key = two_tower_key(reg, t, "production")
            try:
                artifacts = load_two_tower(reg, t, key) if key else None
            except Refused as exc:  # serving refuses the pair too (and keeps its old one)
                self.notes.append(f"production two-tower pair refused ({exc}): replayed without it")
                artifacts = None
            rankers, similarity, default = {}, {}, None
            rv = reg.resolve("ranker", t, "production")
            if rv is not None and self.catalogue is not None:
                rankers[rv] = load_ranker_model(reg, t, rv)
                loaded = {key[0]: artifacts.model} if artifacts is not None else None
                sim = for_ranker(reg, t, rv, self.catalogue, loaded=loaded)
                similarity = {rv: sim} if sim is not None else {}
                default = rv
            self._models = TenantModels(two_tower=artifacts, rankers=rankers, default_ranker=default,
                                        similarity=similarity, fallback_list=load_fallback_list(reg, t),
                                        extra={"registry": reg})  # fmt: skip
        return self._models

    def _pipeline(self, served: PlatformConfig, version: str, events: Any, users: Any) -> Any:
        from serving.assembly import TenantData
        from serving.pipeline import RecommendationPipeline
        from serving.served_config import build_served_stages
        from training.evaluate_pipeline import offline_platform

        data = TenantData(self.catalogue, events, users)
        stages = build_served_stages(offline_platform(served), self.tenant, data, self._loaded_models(),
                                     version=version)  # fmt: skip
        return RecommendationPipeline(stages)

    def current(self) -> tuple[PlatformConfig, str, str]:
        """The tenant's config as served now (production document and rule bundle), the
        tenant config version and the rule bundle version (``inline``: none serves)."""
        from core.rule_bundle import served_rules

        current = production_document(self.registry, self.tenant)
        version = current[0] if current else BOOTSTRAP
        platform = served_platform(self.platform, self.tenant, current[1] if current else None, None, version)
        platform, rules = served_rules(platform, self.tenant, production_bundle(self.registry, self.tenant))
        return platform, version, rules

    def replayed(self, served: PlatformConfig, version: str, limit: int) -> list[dict[str, Any]]:
        """The tenant's ``limit`` most recent logged requests replayed point in time, oldest
        first, under ``served`` and under the config served now: per request its ``record``,
        ``slate`` (item ids; None when it failed: ``error``), ``was`` (the current config's
        slate), ``fallback`` and ``violations`` (what the new rules remove from its slate)."""
        from ranking.rules import RuleChain
        from training.evaluate_pipeline import _users_table

        records = sorted(recent_decisions(self.storage.decisions, self.tenant, limit), key=lambda r: r.at)
        if not records:
            return []
        before, later = _events_split(self.storage.events, self.tenant, records[0].at)
        users = _users_table(self.storage.data, self.tenant)
        prod_served, prod_version, _ = self.current()
        new = self._pipeline(served, version, before, users)
        old = self._pipeline(prod_served, prod_version, before, users)
        chain = RuleChain.from_policy(served.tenant(self.tenant).policy, self.catalogue)

        async def run() -> list[dict[str, Any]]:
            out, pos = [], 0
            for rec in records:
                cut = round(rec.at.timestamp() * 1e6)
                while pos < len(later) and later[pos][0] < cut:  # the events this request saw
                    new.stages.observe(later[pos][1])
                    old.stages.observe(later[pos][1])
                    pos += 1
                query = Query(request_id=f"replay-{rec.request_id}", tenant_id=self.tenant, user_id=rec.user_id,
                              surface=rec.surface, k=rec.k, now=rec.at)  # fmt: skip
                row: dict[str, Any] = {"record": rec, "slate": None, "was": [], "fallback": None, "violations": []}
                out.append(row)
                try:
                    got = await new.recommend(query)
                except Exception as exc:  # noqa: BLE001 - any failure under the new config is the finding
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    continue
                row["fallback"], row["slate"] = got.fallback, [s.item_id for s in got.slate]
                try:
                    row["was"] = [s.item_id for s in (await old.recommend(replace(query, experiment=None))).slate]
                except Exception:  # noqa: BLE001 - production failing is not the candidate's fault
                    pass
                merged = [MergedCandidate(i, (Candidate(i, "replay", version, 0.0, r),))
                          for r, i in enumerate(row["slate"])]  # fmt: skip
                state = await _state(new, rec.user_id)
                try:
                    row["violations"] = [f"{r.item_id} ({r.reason})" for r in chain.apply(query, merged, state).removed]
                except PolicyUnavailable as exc:
                    row["violations"] = [f"rules cannot be evaluated: {exc}"]
            return out

        return asyncio.run(run())

    def replay(self, served: PlatformConfig, version: str, limit: int, label: str = "") -> dict[str, dict]:
        """The ``replay_policy`` and ``replay_slate_movement`` checks of :meth:`replayed`
        (``label``: the candidate's name in the detail, default ``version``)."""
        label = label or version
        rows = self.replayed(served, version, limit)
        if not rows:
            detail = f"no logged requests of {self.tenant} to replay (decision log {self.storage.decisions})"
            return {"replay_policy": _check(True, detail, "safety_guardrails"),
                    "replay_slate_movement": _check(True, detail, "offline_metrics")}  # fmt: skip
        violations = [f"{r['record'].request_id}: {v}" for r in rows for v in r["violations"]]
        failures = [f"{r['record'].request_id}: {r['error']}"[:200] for r in rows if "error" in r]
        fallbacks = sum(r["fallback"] is not None for r in rows)
        overlaps = [len(set(r["slate"]) & set(r["was"])) / max(r["record"].k, 1)
                    for r in rows if r["slate"] is not None and (r["slate"] or r["was"])]  # fmt: skip
        n = len(rows)
        problems = violations + failures
        detail = (f"{n} requests replayed under {label} (point in time): {len(violations)} policy violations, "
                  f"{len(failures)} failed, {fallbacks} fallbacks")  # fmt: skip
        if problems:
            detail += ": " + "; ".join(problems[:5])
        if self.notes:
            detail += " (" + "; ".join(self.notes) + ")"
        mean = sum(overlaps) / len(overlaps) if overlaps else 0.0
        k = max(r["record"].k for r in rows)
        _, prod_version, rules = self.current()
        vs = prod_version if rules == "inline" else f"{prod_version} + {RULE_BUNDLE} {rules}"
        movement = {"requests": n, "mean_overlap_at_k": round(mean, 4), "k": k, "vs": vs,
                    "unchanged_slates": sum(o >= 1.0 for o in overlaps)}  # fmt: skip
        return {
            "replay_policy": _check(not problems, detail, "safety_guardrails"),
            "replay_slate_movement": _check(True, json.dumps(movement), "offline_metrics"),
        }


def _events_split(root: str, tenant: str, at: datetime) -> tuple[Any, list[tuple[int, dict]]]:
    """The tenant's events before ``at`` (a table: what the replay's pipelines start from) and
    those at or after it as ``(ts in µs, row)`` in the order replicas fold them
    (:func:`core.schema.event_order_keys`)."""
    import numpy as np

    from core.clock import column_micros
    from core.schema import event_order_keys

    log = EventLog(root)
    try:
        before = log.read(tenant, end=at)
        later = log.read(tenant, start=at)
    except (FileNotFoundError, OSError):
        return None, []
    if later.num_rows == 0:
        return before, []
    ts = column_micros(later["ts"]).to_numpy()
    seq = later["seq"].to_numpy(zero_copy_only=False) if "seq" in later.column_names else None
    order = np.lexsort(event_order_keys(ts, seq, later["event_type"].to_numpy(zero_copy_only=False),
                                        later["item_id"].to_numpy(zero_copy_only=False)))  # fmt: skip
    rows = later.to_pylist()
    return before, [(int(ts[i]), rows[i]) for i in order]


async def _state(pipeline: Any, user_id: str) -> Any:
    from serving.user_state import ServingUserState

    try:
        found = pipeline.stages.user_state(user_id)
        return await found if asyncio.iscoroutine(found) else found
    except Exception:  # noqa: BLE001 - the pipeline served with an empty state too
        return ServingUserState(user_id=user_id)


def run_checks(platform: PlatformConfig, registry: Any, tenant: str, version: str,
               replay: int = REPLAY_REQUESTS, kind: str = KIND) -> dict[str, dict]:  # fmt: skip
    """The automatic checks of a published ``tenant_config`` (or ``rule_bundle``: ``kind``)
    version, recorded as a review note."""
    review = ConfigReview(platform, registry, tenant)
    if kind == RULE_BUNDLE:
        checks = review.bundle_checks(load_bundle(registry, tenant, version), version, replay)
    else:
        checks = review.checks(load_published(registry, tenant, version), version, replay)
    ok = all(c["ok"] for c in checks.values())
    registry.add_review(ReviewRecord(kind=kind, tenant=tenant, version=version, at=datetime.now(UTC),
                                     actor="config-review", decision="note", checks=checks,
                                     comment="automatic checks " + ("passed" if ok else "FAILED")))  # fmt: skip
    return checks


def run_bundle_checks(platform: PlatformConfig, registry: Any, tenant: str, version: str,
                      replay: int = REPLAY_REQUESTS) -> dict[str, dict]:  # fmt: skip
    """:func:`run_checks` of a ``rule_bundle`` version."""
    return run_checks(platform, registry, tenant, version, replay, kind=RULE_BUNDLE)


def record_review(registry: Any, tenant: str, version: str, *, actor: str, sign_offs: tuple[str, ...] = (),
                  approve: bool = False, reject: bool = False, comment: str = "",
                  kind: str = KIND) -> list[str]:  # fmt: skip
    """Record sign-offs, then the approval (on the latest automatic checks, when nothing else
    is missing) or a rejection of a ``kind`` version (``tenant_config``, ``rule_bundle``).
    Returns what still blocks promotion (empty: promotable)."""
    def record(decision: str, **kw: Any) -> None:
        registry.add_review(ReviewRecord(kind=kind, tenant=tenant, version=version, at=datetime.now(UTC),
                                         actor=actor, decision=decision, comment=comment, **kw))  # fmt: skip

    notes = [r for r in registry.reviews(kind, tenant, version) if r.decision == "note"]
    checks = notes[-1].checks if notes else {}
    for item in sign_offs:
        record("sign_off", item=item)
    if reject:
        record("reject", checks=checks)
        return registry.promotion_problems(kind, tenant, version)
    pending = ReviewRecord(kind=kind, tenant=tenant, version=version, at=datetime.now(UTC), actor=actor,
                           decision="approve", checks=checks)  # fmt: skip
    blocking = gate_problems(registry.reviews(kind, tenant, version) + [pending], registry.policy.checklist(kind))
    if not notes:
        blocking.insert(0, "no automatic checks recorded (`--recheck`)")
    if approve and not blocking:
        record("approve", checks=checks)
    return blocking if blocking else registry.promotion_problems(kind, tenant, version)
