"""Batch scoring through the Ray Jobs API on a local cluster, for the `tiny` tenants, and the
serving side that reads it: the `precomputed` source under the live rules, its handover to
online retrieval, and the owned fallback list on the policy-unavailable path."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.commands.train_cmd import submit
from core.catalogue import Catalogue
from core.contracts import Query
from core.eventlog import EventLog
from core.registry import Registry
from tests.integration.serving_artifacts import publish_ranker, publish_two_tower

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "globex")
EMAIL = {"mode": "precomputed", "sources": [
    {"name": "precomputed", "kind": "precomputed", "quota": 50, "timeout_ms": 500},
    {"name": "two_tower", "kind": "two_tower", "quota": 200, "timeout_ms": 2000},
    {"name": "trending", "kind": "trending", "quota": 50, "timeout_ms": 2000}]}  # fmt: skip


@pytest.fixture(scope="module")
def env(tiny_data: Path, tmp_path_factory):
    """Production toy models for both tenants, a platform config whose tenants both have a
    precomputed `email` surface, and the job configs."""
    root = tmp_path_factory.mktemp("batch")
    platform = yaml.safe_load((REPO / "configs/platform.yaml").read_text())
    platform["storage"] = {"data": str(tiny_data), "events": str(tiny_data / "events"),
                           "registry": str(root / "registry"), "decisions": str(root / "decisions")}  # fmt: skip
    for t in platform["tenants"]:
        t["surfaces"]["email"] = EMAIL
    (root / "platform.yaml").write_text(yaml.safe_dump(platform))
    registry = Registry(str(root / "registry"))
    for tenant in TENANTS:
        catalogue = Catalogue.load(str(tiny_data), tenant)
        tt, _ = publish_two_tower(registry, catalogue)
        publish_ranker(registry, catalogue, two_tower=tt)
    job = yaml.safe_load((REPO / "configs/train/batch_score.yaml").read_text())
    job.update(work_dir=str(root / "work"), k=10, batch_size=64, cpus_per_actor=0.5)
    (root / "batch_score.yaml").write_text(yaml.safe_dump(job))
    fallback = yaml.safe_load((REPO / "configs/train/fallback_lists.yaml").read_text())
    fallback.update(work_dir=str(root / "work"))
    (root / "fallback_lists.yaml").write_text(yaml.safe_dump(fallback))
    return root


@pytest.fixture(scope="module")
def scored(ray_cluster, env, tiny_data):
    """Both tenants scored by `python -m training.batch_score` submitted to the Jobs API."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RECSYS_CONFIG", str(env / "platform.yaml"))
    try:
        for tenant in TENANTS:
            job_id, status = submit(ray_cluster.dashboard_url, "training.batch_score",
                                    ["--config", str(env / "batch_score.yaml"), "--tenant", tenant],
                                    python=sys.executable)  # fmt: skip
            assert status == "SUCCEEDED", f"batch_score {tenant}: job {job_id} ended {status}"
    finally:
        mp.undo()
    return Registry(str(env / "registry"))


def _all_users(data: Path, tenant: str) -> set[str]:
    from training.quality_checks import users_table

    users = set(users_table(str(data), tenant)["user_id"].to_pylist())
    return users | set(EventLog(str(data / "events")).read(tenant, columns=["user_id"])["user_id"].to_pylist())


@pytest.mark.parametrize("tenant", TENANTS)
def test_every_user_gets_a_slate_in_the_production_batch_recs(scored, tiny_data, tenant):
    version = scored.resolve("batch_recs", tenant, "production")
    assert version is not None, "the job reviewed and promoted its version"
    m = scored.manifest("batch_recs", tenant, version)
    recs = pq.read_table(scored.local_path("batch_recs", tenant, version) / "recs.parquet")
    with_items = recs.filter(pc.is_valid(recs["item_id"]))
    assert set(with_items["user_id"].to_pylist()) == _all_users(tiny_data, tenant)
    per_user = with_items.group_by("user_id", use_threads=False).aggregate([("item_id", "count")])
    assert pc.max(per_user["item_id_count"]).as_py() == 10
    assert all(with_items["eligible"].to_pylist())
    assert set(recs["surface"].to_pylist()) == {"email"}
    # The manifest: what ran, until when it is good, how much of it, how fast, who owns it.
    assert set(m.config["versions"]) >= {"two_tower", "ann_index", "ranker", "config"}
    assert m.config["versions"]["ranker"] == scored.resolve("ranker", tenant, "production")
    assert datetime.fromisoformat(m.config["expires_at"]) > datetime.now(UTC)
    assert m.metrics["coverage"] == 1.0 and m.metrics["users"] == len(_all_users(tiny_data, tenant))
    assert m.metrics["seconds"] > 0 and m.metrics["users_per_s"] > 0
    assert m.owner.team == "recsys-serving"
    assert [r.decision for r in scored.reviews("batch_recs", tenant, version)] == ["note", "approve"]


def _stages(env: Path, tiny_data: Path, registry: Registry, tenant: str, **kwargs):
    from core.config import load_platform_config
    from serving.assembly import TenantData, TenantModels, build_tenant_stages
    from serving.fallback_list import load_fallback_list
    from serving.loaders import load_ranker, load_two_tower
    from training.quality_checks import users_table

    catalogue = Catalogue.load(str(tiny_data), tenant)
    events = EventLog(str(tiny_data / "events")).read(tenant)
    from core.features import popularity_from_events

    two_tower = load_two_tower(registry, tenant, (registry.resolve("two_tower", tenant, "production"),
                                                  registry.resolve("ann_index", tenant, "production")))  # fmt: skip
    ranker_v = registry.resolve("ranker", tenant, "production")
    ranker = load_ranker(registry, tenant, ranker_v, catalogue, popularity_from_events(events))
    models = TenantModels(two_tower=two_tower, rankers={ranker_v: ranker}, default_ranker=ranker_v,
                          fallback_list=load_fallback_list(registry, tenant), extra={"registry": registry})  # fmt: skip
    return build_tenant_stages(load_platform_config(env / "platform.yaml"), tenant,
                               TenantData(catalogue, events, users_table(str(tiny_data), tenant)), models, **kwargs)  # fmt: skip


def _ask(pipe, tenant: str, user: str, now: datetime, surface: str = "email"):
    query = Query(request_id=f"t-{user}-{now.timestamp()}", tenant_id=tenant, user_id=user, surface=surface, k=10, now=now)
    return asyncio.run(pipe.recommend(query))


def test_a_hidden_item_never_comes_back_from_the_precomputed_source(scored, env, tiny_data):
    from serving.pipeline import RecommendationPipeline

    stages = _stages(env, tiny_data, scored, "acme")
    pipe = RecommendationPipeline(stages)
    user, now = "u0000007", datetime.now(UTC)
    first = _ask(pipe, "acme", user, now)
    outcomes = {o.source: o.status for o in first.decision.sources}
    assert outcomes == {"precomputed": "ok", "two_tower": "skipped", "trending": "skipped"}
    assert first.fallback is None and not any(d.startswith("precomputed_handover") for d in first.decision.degraded)
    assert first.decision.versions["batch_recs"] == scored.resolve("batch_recs", "acme", "production")
    hidden = first.slate[0].item_id
    # The user hides it after the batch ran: POST /v1/events folds it into online state.
    stages.observe({"tenant_id": "acme", "user_id": user, "item_id": hidden, "event_type": "hide",
                    "ts": now.timestamp(), "surface": "email"})  # fmt: skip
    for later in (now + timedelta(seconds=1), now + timedelta(hours=1)):
        again = _ask(pipe, "acme", user, later)
        assert hidden not in [s.item_id for s in again.slate]
        assert {o.source: o.status for o in again.decision.sources}["precomputed"] == "ok"
        # The batch still proposes it; the live rule removed it, with its reason.
        assert hidden in again.decision.candidates.item_id
        assert any(r.item_id == hidden and r.reason == "hidden_by_user" for r in again.decision.removals)


def test_an_expired_artifact_or_a_missing_user_hands_over_to_online_retrieval(scored, env, tiny_data):
    from serving.pipeline import RecommendationPipeline

    pipe = RecommendationPipeline(_stages(env, tiny_data, scored, "acme"))
    expires = datetime.fromisoformat(scored.manifest("batch_recs", "acme", scored.resolve("batch_recs", "acme", "production")).config["expires_at"])
    for user, now, why in (("u0000007", expires + timedelta(seconds=1), "expired"),
                           ("someone-new", datetime.now(UTC), "missing_user")):  # fmt: skip
        result = _ask(pipe, "acme", user, now)
        assert f"precomputed_handover:{why}" in result.decision.degraded  # in the response too
        outcomes = {o.source: o for o in result.decision.sources}
        assert outcomes["precomputed"].status == "handover" and outcomes["precomputed"].error == why
        assert outcomes["two_tower"].status == "ok" and outcomes["trending"].status == "ok"
        assert result.slate and result.fallback is None
        assert "precomputed" not in {s for item in result.slate for s in item.sources}


def test_fallback_lists_are_generated_owned_and_served_when_policy_is_down(scored, env, tiny_data, monkeypatch):
    """`python -m training.fallback_lists` (in process: it needs no cluster) publishes a
    validated, promoted list; with policy data unavailable serving answers from it."""
    from serving.faults import FaultInjection, FaultSwitch
    from serving.pipeline import RecommendationPipeline
    from training import fallback_lists

    monkeypatch.setenv("RECSYS_CONFIG", str(env / "platform.yaml"))
    assert fallback_lists.main(["--config", str(env / "fallback_lists.yaml"), "--tenant", "acme"]) == 0
    version = scored.resolve("fallback_list", "acme", "production")
    m = scored.manifest("fallback_list", "acme", version)
    assert m.owner.runbook == "docs/runbooks/fallback-list-expiring.md"
    assert datetime.fromisoformat(m.config["expires_at"]) > datetime.now(UTC)
    faults = FaultSwitch(FaultInjection(policy_unavailable=True))
    pipe = RecommendationPipeline(_stages(env, tiny_data, scored, "acme", faults=faults))
    result = _ask(pipe, "acme", "u0000007", datetime.now(UTC), surface="home")
    assert result.fallback == "policy_unavailable"
    assert result.decision.versions["fallback_list"] == version
    from serving.fallback_list import load_fallback_list

    served = [s.item_id for s in result.slate]
    lists = load_fallback_list(scored, "acme")
    segment = _stages(env, tiny_data, scored, "acme").user_state("u0000007").max_maturity
    assert served and set(served) <= set(lists.items_for("home", segment))
