"""Tenant config as a reviewed registry artifact, and kill switches, in process.

One world per module: the tiny synthetic data, toy models published (and promoted through the
launch review) to a temp registry, a platform config pointing at both, and a decision log of
real requests served by the in-process pipeline, for the review's replay. The CLI runs in
process (``cluster.cli.main``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cluster.cli import main as recsys
from core.config import load_platform_config
from core.contracts import Query
from core.decision_log import new_request_id
from core.eventlog import EventLog
from core.kill_switches import KillSwitchError, read_state, set_switch
from core.promotion import FreezeWindow, PromotionPolicy, load_promotion_policy
from core.registry import PromotionRefused, Registry
from core.tenant_config import KIND, effective_platform, load_document_file
from serving.assembly import TenantData, TenantModels
from serving.pipeline import RecommendationPipeline
from serving.served_config import build_served_stages
from tests.unit.tenant_world import eligible, freeze_now, log_requests, pipeline, write_world

ROOT = Path(__file__).resolve().parents[2]
OWNER = {"team": "acme-recs", "primary": "ana", "escalation": "#acme-recs-oncall",
         "runbook": "docs/runbooks/hot-swap-and-rollback.md"}  # fmt: skip
SIGN_OFFS = ["--sign-off", "privacy_review", "--sign-off", "rollback_plan", "--sign-off", "oncall_notified"]


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("tenant_config")
    config, registry, catalogues = write_world(tiny_data, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_CONFIG", str(config))
        mp.setenv("RECSYS_REGISTRY", str(root / "registry"))
        platform = load_platform_config()
        log_requests(platform, registry, {"acme": catalogues["acme"]}, root / "decisions")
        safe = eligible(platform, catalogues["acme"])[:20]
        yield {"root": root, "registry": registry, "platform": platform, "catalogue": catalogues["acme"],
               "safe": safe}


def _pipeline(platform, registry, catalogue, switches=None):
    return pipeline(platform, registry, catalogue, switches=switches)


def _export(world, tmp_path, **edit) -> Path:
    path = tmp_path / "acme.yaml"
    owner = [f"--owner-{k}={v}" for k, v in OWNER.items()]
    assert recsys(["config", "export", "--tenant", "acme", str(path), *owner]) == 0
    doc = yaml.safe_load(path.read_text())
    doc["policy"]["safe_fallback"] = world["safe"]
    doc["surfaces"].pop("email", None)  # precomputed: needs a production batch_recs this world lacks
    for key, value in edit.items():
        doc[key] = value(doc) if callable(value) else value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _checks(world, version: str) -> dict:
    notes = [r for r in world["registry"].reviews(KIND, "acme", version) if r.decision == "note"]
    return notes[-1].checks


def _published(world) -> str:
    return world["registry"].resolve(KIND, "acme", "candidate")


def test_publish_validates_diffs_and_runs_every_automatic_check(world, tmp_path, capsys):
    def heavier_likes(doc):
        doc["surfaces"]["home"]["ranker"]["task_weights"]["like"] = 3.0
        return doc["surfaces"]

    path = _export(world, tmp_path, surfaces=heavier_likes)
    assert recsys(["config", "publish", "--tenant", "acme", str(path), "--actor", "ana"]) == 0
    out = capsys.readouterr().out
    assert "published as candidate" in out
    assert "~ surfaces.home.ranker.task_weights.like: 2.0 -> 3.0" in out
    assert "+ policy.safe_fallback" in out or "~ policy.safe_fallback" in out
    checks = _checks(world, _published(world))
    assert set(checks) == {"schema", "references_exist", "safe_fallback", "experiment_arms", "experiment_plans", "replay_policy",
                           "replay_slate_movement"}  # fmt: skip
    assert all(c["ok"] for c in checks.values()), checks
    assert "24 requests replayed" in checks["replay_policy"]["detail"]
    assert '"requests": 24' in checks["replay_slate_movement"]["detail"]
    manifest = world["registry"].manifest(KIND, "acme", _published(world))
    assert manifest.owner.team == "acme-recs"


def test_a_document_without_an_owner_is_refused_naming_the_file_and_key(world, tmp_path, capsys):
    path = _export(world, tmp_path)
    doc = yaml.safe_load(path.read_text())
    del doc["owner"]
    path.write_text(yaml.safe_dump(doc))
    before = world["registry"].versions(KIND, "acme")
    assert recsys(["config", "publish", "--tenant", "acme", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "owner" in err and "required key is missing" in err
    assert world["registry"].versions(KIND, "acme") == before
    with pytest.raises(Exception, match="owner"):
        load_document_file(path)


def test_failing_checks_name_what_is_wrong_and_block_the_approval(world, tmp_path, capsys):
    def broken(doc):
        doc["surfaces"].pop("item_page")  # logged requests use it: the replay fails them
        return doc["surfaces"]

    def uneven(doc):
        doc["experiments"][0]["variants"][0]["weight"] = 30
        doc["experiments"][0]["variants"][1]["overrides"]["ranker_version"] = "v20990101T000000000Z-abcdef"
        return doc["experiments"]

    blocked = world["safe"][0]
    path = _export(world, tmp_path, surfaces=broken, experiments=uneven,
                   policy=lambda d: {**d["policy"], "blocked_items": [blocked]})  # fmt: skip
    assert recsys(["config", "publish", "--tenant", "acme", str(path)]) == 1
    version = _published(world)
    checks = _checks(world, version)
    assert not checks["experiment_arms"]["ok"] and "80%" in checks["experiment_arms"]["detail"]
    assert not checks["references_exist"]["ok"] and "no ranker version" in checks["references_exist"]["detail"]
    assert not checks["safe_fallback"]["ok"] and blocked in checks["safe_fallback"]["detail"]
    assert not checks["replay_policy"]["ok"] and "UnknownSurface" in checks["replay_policy"]["detail"]
    capsys.readouterr()
    assert recsys(["config", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]) == 1
    assert "automatic check experiment_arms failed" in capsys.readouterr().out
    with pytest.raises(PromotionRefused, match="no recorded approval"):
        world["registry"].promote(KIND, "acme", version, actor="rita")


def test_review_gate_promote_then_rollback_in_one_command(world, tmp_path, capsys):
    reg = world["registry"]
    versions = []
    for like in (5.0, 6.0):
        path = _export(world, tmp_path, description=f"like weight {like}")
        doc = yaml.safe_load(path.read_text())
        doc["surfaces"]["home"]["ranker"]["task_weights"]["like"] = like
        path.write_text(yaml.safe_dump(doc))
        assert recsys(["config", "publish", "--tenant", "acme", str(path), "--replay", "5"]) == 0
        versions.append(_published(world))
        assert recsys(["config", "promote", "--tenant", "acme"]) == 2  # not reviewed yet
        assert "no recorded approval" in capsys.readouterr().err
        assert recsys(["config", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]) == 0
        assert recsys(["config", "promote", "--tenant", "acme", "--reason", "launch"]) == 0
    platform, served = effective_platform(world["platform"], reg, "acme")
    assert served == versions[1] and platform.tenant("acme").surfaces["home"].ranker.task_weights["like"] == 6.0
    assert recsys(["config", "rollback", "--tenant", "acme", "--reason", "bad launch"]) == 0
    platform, served = effective_platform(world["platform"], reg, "acme")
    assert served == versions[0] and platform.tenant("acme").surfaces["home"].ranker.task_weights["like"] == 5.0
    actions = [(a.action, a.alias, a.version) for a in reg.audit(KIND, "acme") if a.alias == "production"]
    assert actions[-1] == ("rollback", "production", versions[0])


def test_a_kill_switch_removes_a_source_is_audited_and_marks_every_record(world):
    reg, platform, catalogue = world["registry"], world["platform"], world["catalogue"]
    served, version = effective_platform(platform, reg, "acme")
    state = set_switch(reg, served, "acme", "source", "trending", "off", reason="bad counts", actor="sre")
    assert state.labels() == ("source:trending",)
    audit = [a for a in reg.audit(tenant="acme") if a.action == "kill_switch"]
    assert (audit[-1].item, audit[-1].decision, audit[-1].reason) == ("source:trending", "off", "bad counts")
    with pytest.raises(KillSwitchError, match="no source 'trendy'"):
        set_switch(reg, served, "acme", "source", "trendy", "off", reason="typo", actor="sre")
    with pytest.raises(KillSwitchError, match="needs --reason"):
        set_switch(reg, served, "acme", "experiment", "acme-home-like-weight", "off", reason=" ", actor="sre")

    pipe = _pipeline(platform, reg, catalogue, switches=read_state(reg, "acme"))
    q = Query(request_id="r1", tenant_id="acme", user_id="u1", surface="home", k=10, now=datetime.now(UTC))
    record = asyncio.run(pipe.recommend(q)).decision
    assert "trending" not in {s.source for s in record.sources}
    assert "kill_switch:source:trending" in record.degraded
    assert set_switch(reg, served, "acme", "source", "trending", "on", reason="fixed", actor="sre").off == ()
    assert [a.decision for a in reg.audit(tenant="acme") if a.action == "kill_switch"][-2:] == ["off", "on"]


def test_killing_a_ranker_or_an_experiment_serves_the_fallback_order_and_the_default_arm(world):
    reg, platform = world["registry"], world["platform"]
    served, _ = effective_platform(platform, reg, "acme")
    set_switch(reg, served, "acme", "ranker", "default", "off", reason="scores NaN", actor="sre")
    set_switch(reg, served, "acme", "experiment", "acme-home-like-weight", "off", reason="guardrail", actor="sre")
    try:
        from serving.loaders import load_ranker_model

        rv = reg.resolve("ranker", "acme", "production")
        models = TenantModels(rankers={rv: load_ranker_model(reg, "acme", rv)}, default_ranker=rv)
        events = EventLog(platform.resolved_storage().events).read("acme")
        stages = build_served_stages(platform, "acme", TenantData(world["catalogue"], events), models,
                                     switches=read_state(reg, "acme"))  # fmt: skip
        q = Query(request_id="r2", tenant_id="acme", user_id="u2", surface="home", k=10, now=datetime.now(UTC))
        record = asyncio.run(RecommendationPipeline(stages).recommend(q)).decision
        assert record.slate and record.fallback == "ranker_unavailable" and record.versions["ranker"] != rv
        assert record.experiment["id"] == "" and record.experiment["arm"] == "default"
        assert {"kill_switch:ranker:default", "kill_switch:experiment:acme-home-like-weight"} <= set(record.degraded)
    finally:
        for target, name in (("ranker", "default"), ("experiment", "acme-home-like-weight")):
            set_switch(reg, served, "acme", target, name, "on", reason="done", actor="sre")


def test_a_switch_that_leaves_a_surface_without_sources_is_refused(world):
    reg, platform = world["registry"], world["platform"]
    served, _ = effective_platform(platform, reg, "globex")
    set_switch(reg, served, "globex", "source", "two_tower", "off", reason="x", actor="sre")
    set_switch(reg, served, "globex", "source", "trending", "off", reason="x", actor="sre")
    with pytest.raises(KillSwitchError, match="no source left"):
        set_switch(reg, served, "globex", "source", "fresh", "off", reason="x", actor="sre")
    assert read_state(reg, "globex").labels() == ("source:two_tower", "source:trending")


def test_a_freeze_refuses_a_config_promotion_but_not_a_rollback_or_a_kill_switch(world, tmp_path):
    base = load_promotion_policy()
    now = datetime.now(UTC)
    freeze = FreezeWindow(name="peak", start=now - timedelta(hours=1), end=now + timedelta(hours=1),
                          kinds=(KIND,))  # fmt: skip
    reg = Registry(world["registry"].uri, policy=PromotionPolicy(**{**base.model_dump(), "freezes": (freeze,)}))
    assert recsys(["config", "publish", "--tenant", "acme", str(_export(world, tmp_path)), "--replay", "3"]) == 0
    candidate = _published(world)
    with pytest.raises(PromotionRefused, match="change freeze 'peak'"):
        reg.promote(KIND, "acme", candidate, actor="rita")
    if reg.resolve(KIND, "acme", "previous"):
        reg.rollback(KIND, "acme", actor="sre", reason="incident")
    served, _ = effective_platform(world["platform"], reg, "acme")
    assert set_switch(reg, served, "acme", "source", "fresh", "off", reason="incident", actor="sre").labels()
    set_switch(reg, served, "acme", "source", "fresh", "on", reason="over", actor="sre")


def test_during_a_freeze_only_a_safety_rule_goes_through(world, tmp_path, monkeypatch, capsys):
    review = ["config", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]
    # Production is this world's exported config before the freeze (the test does not rely on
    # what an earlier test of the module left promoted: run alone, production was platform.yaml,
    # which the export differs from beyond policy, so the safety change was refused).
    path = _export(world, tmp_path)
    assert recsys(["config", "publish", "--tenant", "acme", str(path), "--replay", "3"]) == 0
    assert recsys(review) == 0
    assert recsys(["config", "promote", "--tenant", "acme", "--reason", "baseline"]) == 0
    freeze_now(tmp_path, monkeypatch, KIND)
    # Looser: more exploration slots. Refused by the freeze.
    path = _export(world, tmp_path)
    assert recsys(["config", "set", str(path), "surfaces.home.ranker.max_candidates=400"]) == 0
    assert recsys(["config", "publish", "--tenant", "acme", str(path), "--replay", "5"]) == 0
    assert recsys(review) == 0
    capsys.readouterr()
    assert recsys(["config", "promote", "--tenant", "acme"]) == 2
    assert "change freeze 'peak'" in capsys.readouterr().err
    # Stricter only: one more blocked item on top of production. A safety rule: it goes through.
    path = _export(world, tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["policy"]["blocked_items"] = [*doc["policy"]["blocked_items"], "i0000399"]
    path.write_text(yaml.safe_dump(doc))
    assert recsys(["config", "publish", "--tenant", "acme", str(path), "--replay", "5"]) == 0
    assert recsys(review) == 0
    assert recsys(["config", "promote", "--tenant", "acme", "--reason", "block i0000399"]) == 0
    assert "safety rule through freeze 'peak'" in capsys.readouterr().out
    last = [a for a in world["registry"].audit(KIND, "acme") if a.alias == "production"][-1]
    assert last.action == "promote" and "safety rule through freeze 'peak'" in last.reason


def _launch(world, tmp_path, like: float) -> str:
    """Publish, review and promote acme's config with ``like`` as its home like weight."""
    path = _export(world, tmp_path)
    assert recsys(["config", "set", str(path), f"surfaces.home.ranker.task_weights.like={like}"]) == 0
    assert recsys(["config", "publish", "--tenant", "acme", str(path), "--replay", "3"]) == 0
    assert recsys(["config", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]) == 0
    assert recsys(["config", "promote", "--tenant", "acme", "--reason", f"like {like}"]) == 0
    return world["registry"].resolve(KIND, "acme", "production")


def test_ingress_pipelines_swap_a_promoted_config_and_keep_the_live_events(world, tmp_path, monkeypatch):
    """The Ingress replica's tenant pipelines (no Ray: the models in the replica, as on a CPU
    node): a promoted config and a kill switch are picked up by the alias poll's refresh, and a
    hide that reached the replica only live (not in the event log it rebuilds from) survives."""
    from deployments.loaders import ServingContext, load_catalogues
    from deployments.model_slots import RankerSlots, TwoTowerSlots
    from deployments.settings import AppArgs
    from deployments.tenants import LivePopularity, TenantPipelines

    monkeypatch.delenv("RECSYS_PROMOTION_POLICY", raising=False)
    storage = world["platform"].resolved_storage()
    ctx = ServingContext(config_path=str(world["root"] / "platform.yaml"), data=storage.data,
                         events=storage.events, registry=storage.registry, decisions=storage.decisions,
                         alias="production")  # fmt: skip
    args = AppArgs(platform_config=ctx.config_path,
                   placement={"source_kinds": {"two_tower": "ingress"}, "ranker": "ingress"})  # fmt: skip

    async def run() -> None:
        catalogues = load_catalogues(ctx, [t.id for t in world["platform"].tenants])  # as the Ingress
        two_tower = TwoTowerSlots(ctx, catalogues=catalogues)
        await two_tower.refresh_all()
        holder: dict = {}
        ranker = RankerSlots(ctx, lambda t: LivePopularity(lambda: holder["p"].pipelines[t].stages.popularity),
                             catalogues=catalogues)  # fmt: skip
        tenants = holder["p"] = TenantPipelines(ctx, args, world["platform"], {}, two_tower, ranker,
                                                catalogues=catalogues)  # fmt: skip
        await ranker.refresh_all()
        # One catalogue object for the rules, the sources and the ranker; the ranker reads the
        # live popularity by its rows (aligned when the pipeline was built).
        assert tenants.catalogues["acme"] is two_tower.catalogues["acme"] is catalogues["acme"]
        scorer = ranker.runtime("acme")
        assert scorer.catalogue is catalogues["acme"] and scorer._popularity_by_row
        assert await tenants.refresh_configs() == {"acme": False, "globex": False}

        def ask():
            q = Query(request_id=new_request_id(), tenant_id="acme", user_id="u_live", surface="home", k=10,
                      now=datetime.now(UTC))  # fmt: skip
            return tenants.pipelines["acme"].recommend(q)

        first = await ask()
        hidden = first.slate[0].item_id
        tenants.observe("acme", [{"event_id": "live-1", "tenant_id": "acme", "user_id": "u_live",
                                  "item_id": hidden, "event_type": "hide", "ts": datetime.now(UTC)}])  # fmt: skip
        version = await asyncio.to_thread(_launch, world, tmp_path, 11.0)
        assert await tenants.refresh_configs() == {"acme": True, "globex": False}
        after = await ask()
        assert after.decision.versions["tenant_config"] == version
        assert after.decision.versions["ranker"] == ranker.versions()["acme"]["ranker"]
        assert hidden not in [s.item_id for s in after.slate]
        assert tenants.served("acme")["tenant_config"] == version

        served, _ = effective_platform(world["platform"], world["registry"], "acme")
        set_switch(world["registry"], served, "acme", "source", "fresh", "off", reason="stale", actor="sre")
        try:
            assert tenants.served("acme")["kill_switches"][0]["live"] is False  # not picked up yet
            assert await tenants.refresh_configs() == {"acme": True, "globex": False}
            record = (await ask()).decision
            assert "fresh" not in {s.source for s in record.sources}
            assert "kill_switch:source:fresh" in record.degraded
            assert tenants.served("acme")["kill_switches"][0]["live"] is True
        finally:
            set_switch(world["registry"], served, "acme", "source", "fresh", "on", reason="ok", actor="sre")
        assert await tenants.refresh_configs() == {"acme": True, "globex": False}
        assert "fresh" in {s.source for s in (await ask()).decision.sources}

    asyncio.run(run())
