"""A tenant's policy rules as a reviewed ``rule_bundle`` artifact (``recsys rules``), in process,
and the point-in-time replay the config and bundle reviews share.

One world per module (:mod:`tests.unit.tenant_world`): toy models, a decision log of real
requests, acme's ``platform.yaml`` taking its rules from its production bundle
(``policy.rule_bundle: production``), and a copy of the event log this module may append to.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cluster.cli import main as recsys
from core.config import load_platform_config
from core.contracts import Query
from core.eventlog import EventLog
from core.registry import PromotionRefused
from core.rule_bundle import KIND, effective_platform, production_bundle
from tests.unit.tenant_world import eligible, freeze_now, log_requests, write_world

ROOT = Path(__file__).resolve().parents[2]
OWNER = {"team": "acme-trust", "primary": "tess", "escalation": "#acme-trust-oncall",
         "runbook": "docs/runbooks/fallbacks.md"}  # fmt: skip
SIGN_OFFS = ["--sign-off", "rollback_plan", "--sign-off", "oncall_notified"]


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("rule_bundle")
    config, registry, catalogues = write_world(tiny_data, root)
    shutil.copytree(tiny_data / "events", root / "events")
    raw = yaml.safe_load(config.read_text())
    raw["storage"]["events"] = str(root / "events")
    acme = next(t for t in raw["tenants"] if t["id"] == "acme")
    acme["policy"]["rule_bundle"] = "production"
    config.write_text(yaml.safe_dump(raw))
    safe = eligible(load_platform_config(str(config)), catalogues["acme"])[:20]
    acme["policy"]["safe_fallback"] = safe
    config.write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_CONFIG", str(config))
        mp.setenv("RECSYS_REGISTRY", str(root / "registry"))
        platform = load_platform_config()
        log_requests(platform, registry, {"acme": catalogues["acme"]}, root / "decisions")
        yield {"root": root, "registry": registry, "platform": platform, "catalogue": catalogues["acme"],
               "safe": safe}


def _export(world, tmp_path, owner: bool = True, **edit) -> Path:
    path = tmp_path / "acme-rules.yaml"
    flags = [f"--owner-{k}={v}" for k, v in OWNER.items()] if owner else []
    assert recsys(["rules", "export", "--tenant", "acme", str(path), *flags]) == 0
    doc = yaml.safe_load(path.read_text())
    doc.update(edit)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _checks(world, version: str) -> dict:
    return [r for r in world["registry"].reviews(KIND, "acme", version) if r.decision == "note"][-1].checks


def _candidate(world) -> str:
    return world["registry"].resolve(KIND, "acme", "candidate")


def _launch(world, tmp_path, **edit) -> str:
    path = _export(world, tmp_path, **edit)
    assert recsys(["rules", "publish", "--tenant", "acme", str(path), "--replay", "6"]) == 0
    assert recsys(["rules", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]) == 0
    assert recsys(["rules", "promote", "--tenant", "acme", "--reason", f"rules {edit}"]) == 0
    return world["registry"].resolve(KIND, "acme", "production")


def _serve(world, user: str = "u1"):
    """One home request through the stages a replica builds (the event log, the production
    rule bundle from the registry)."""
    from serving.assembly import TenantData, TenantModels
    from serving.pipeline import RecommendationPipeline
    from serving.served_config import build_served_stages

    platform = world["platform"]
    events = EventLog(platform.resolved_storage().events).read("acme")
    stages = build_served_stages(platform, "acme", TenantData(world["catalogue"], events), TenantModels(),
                                 bundle=production_bundle(world["registry"], "acme"))  # fmt: skip
    q = Query(request_id=f"r-{user}", tenant_id="acme", user_id=user, surface="home", k=10, now=datetime.now(UTC))
    return asyncio.run(RecommendationPipeline(stages).recommend(q)).decision


def test_publish_without_an_owner_is_refused(world, tmp_path, capsys):
    path = tmp_path / "no-owner.yaml"
    assert recsys(["rules", "export", "--tenant", "acme", str(path)]) == 2  # no production bundle to take it from
    assert "--owner-team" in capsys.readouterr().err
    path = _export(world, tmp_path)
    doc = yaml.safe_load(path.read_text())
    del doc["owner"]
    path.write_text(yaml.safe_dump(doc))
    assert recsys(["rules", "publish", "--tenant", "acme", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "owner" in err and "required key is missing" in err
    assert world["registry"].versions(KIND, "acme") == []


def test_failing_checks_block_the_approval_and_the_promotion(world, tmp_path, capsys):
    blocked = world["safe"][0]
    path = _export(world, tmp_path, blocked_items=[blocked], blocked_categories=["no-such-category"])
    assert recsys(["rules", "publish", "--tenant", "acme", str(path), "--replay", "4"]) == 1
    out = capsys.readouterr().out
    assert "~ blocked_categories: [] -> [\"no-such-category\"]" in out and "published as candidate" in out
    version = _candidate(world)
    checks = _checks(world, version)
    assert set(checks) == {"schema", "references_exist", "safe_fallback", "replay_policy", "replay_slate_movement"}
    assert not checks["references_exist"]["ok"] and "no-such-category" in checks["references_exist"]["detail"]
    assert not checks["safe_fallback"]["ok"] and blocked in checks["safe_fallback"]["detail"]
    assert recsys(["rules", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]) == 1
    assert "automatic check safe_fallback failed" in capsys.readouterr().out
    assert recsys(["rules", "promote", "--tenant", "acme", "--reason", "x"]) == 2
    assert "no recorded approval" in capsys.readouterr().err
    with pytest.raises(PromotionRefused):
        world["registry"].promote(KIND, "acme", version, actor="rita")


def test_a_promoted_bundle_is_served_named_in_records_and_rolled_back(world, tmp_path, capsys):
    reg, platform = world["registry"], world["platform"]
    before = _serve(world)
    assert before.versions["rule_bundle"] == "inline"
    shown = [s.item_id for s in before.slate]
    assert len(shown) >= 3, before
    first = _launch(world, tmp_path, blocked_items=shown[:2])
    checks = _checks(world, first)
    assert all(c["ok"] for c in checks.values()), checks
    assert "(point in time)" in checks["replay_policy"]["detail"]
    assert json.loads(checks["replay_slate_movement"]["detail"])["requests"] == 6
    served, _ = effective_platform(platform, reg, "acme")
    assert served.tenant("acme").policy.blocked_items == shown[:2]
    second = _launch(world, tmp_path, blocked_items=shown[:3])
    assert effective_platform(platform, reg, "acme")[0].tenant("acme").policy.blocked_items == shown[:3]
    capsys.readouterr()
    assert recsys(["rules", "rollback", "--tenant", "acme", "--reason", "blocked too much"]) == 0
    assert f"production = {first}, previous = {second}" in capsys.readouterr().out
    assert effective_platform(platform, reg, "acme")[0].tenant("acme").policy.blocked_items == shown[:2]
    after = _serve(world)
    assert after.versions["rule_bundle"] == first
    assert not set(shown[:2]) & {s.item_id for s in after.slate}
    assert {r.reason for r in after.removals if r.item_id in shown[:2]} <= {"blocked_item"}
    moves = [(a.action, a.version) for a in reg.audit(KIND, "acme") if a.alias == "production"]
    assert moves[-3:] == [("promote", first), ("promote", second), ("rollback", first)]
    assert recsys(["rules", "show", "--tenant", "acme"]) == 0
    assert "acme-trust / tess" in capsys.readouterr().out
    assert recsys(["owners", "--tenant", "acme", "--json"]) in (0, 1)
    rows = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == KIND and r["tenant"] == "acme"]
    assert rows and rows[0]["owner"]["team"] == "acme-trust" and rows[0]["subject"] == f"{first} (production)"


def test_a_freeze_refuses_a_looser_bundle_and_lets_a_safety_bundle_through(world, tmp_path, monkeypatch, capsys):
    freeze_now(tmp_path, monkeypatch, KIND)
    review = ["rules", "review", "--tenant", "acme", *SIGN_OFFS, "--approve", "--actor", "rita"]
    served = yaml.safe_load(_export(world, tmp_path).read_text())
    # Looser: a blocked item unblocked. Reviewed, and refused by the freeze.
    path = _export(world, tmp_path, blocked_items=served["blocked_items"][1:])
    assert recsys(["rules", "publish", "--tenant", "acme", str(path), "--replay", "3"]) == 0
    assert recsys(review) == 0
    capsys.readouterr()
    assert recsys(["rules", "promote", "--tenant", "acme"]) == 2
    assert "change freeze 'peak'" in capsys.readouterr().err
    # Stricter only: one more blocked item. A safety rule: it goes through.
    assert "i0000399" not in world["safe"]
    path = _export(world, tmp_path, blocked_items=[*served["blocked_items"], "i0000399"])
    assert recsys(["rules", "publish", "--tenant", "acme", str(path), "--replay", "3"]) == 0
    assert recsys(review) == 0
    assert recsys(["rules", "promote", "--tenant", "acme", "--reason", "block i0000399"]) == 0
    assert "safety rule through freeze 'peak'" in capsys.readouterr().out
    last = [a for a in world["registry"].audit(KIND, "acme") if a.alias == "production"][-1]
    assert last.action == "promote" and "safety rule through freeze 'peak'" in last.reason
    assert recsys(["rules", "rollback", "--tenant", "acme", "--reason", "freeze test over"]) == 0  # never frozen


def test_the_review_replays_each_request_with_the_state_it_saw(world):
    """A hide logged after a request does not change that request's replayed slate; the same
    hide logged before it does (the replay folds events up to each request's time)."""
    from training.config_review import ConfigReview

    platform = world["platform"]
    review = ConfigReview(platform, world["registry"], "acme")
    served, version, _ = review.current()

    def slates() -> dict[str, list[str]]:
        return {r["record"].request_id: r["slate"] for r in review.replayed(served, version, 8)}

    base = slates()
    rows = review.replayed(served, version, 8)
    row = next(r for r in rows if r["slate"])
    rec, item = row["record"], row["slate"][0]
    log = EventLog(platform.resolved_storage().events)

    def hide(at: datetime, n: str) -> None:
        result = log.append([{"event_id": f"pit-{n}", "tenant_id": "acme", "user_id": rec.user_id,
                              "item_id": item, "event_type": "hide", "ts": at}], tenant="acme")  # fmt: skip
        assert result.accepted == [f"pit-{n}"], result

    hide(rec.at + timedelta(seconds=1), "after")
    assert slates()[rec.request_id] == base[rec.request_id]
    hide(rec.at - timedelta(seconds=1), "before")
    assert item not in slates()[rec.request_id]
