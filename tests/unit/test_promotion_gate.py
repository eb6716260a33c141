"""The promotion gate: no review, no production; break-glass is named, reasoned and flagged;
rollback always works; freezes hold promotions back; every production change is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cluster.cli import main
from core.manifest import Owner, ReviewRecord
from core.promotion import FreezeWindow, KindChecklist, PromotionPolicy, load_promotion_policy
from core.registry import PromotionRefused, Registry, RegistryError
from core.train_config import ReviewConfig
from tests.unit.review_helpers import approve, reviewable
from training.review import review_versions

OWNER = Owner(team="ranking", primary="ada", escalation="#ranking-oncall", runbook="r.md")
POLICY = PromotionPolicy(emergency_roles={"sre-oncall": ("sam",)})
SIGN_OFFS = POLICY.checklist("ranker").sign_offs


def _publish(reg: Registry, tmp_path: Path, name: str, **kw) -> str:
    src = tmp_path / name
    src.mkdir()
    (src / "model.pt").write_text(name)
    kw = {**reviewable("ranker"), **kw}
    return reg.publish("ranker", "acme", src, owner=OWNER, **kw).version


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(str(tmp_path / "reg"), policy=POLICY)


def test_an_unreviewed_version_is_refused_and_the_refusal_says_what_is_missing(reg, tmp_path):
    v = _publish(reg, tmp_path, "a")
    with pytest.raises(PromotionRefused) as refused:
        reg.promote("ranker", "acme", v, actor="ada")
    assert refused.value.problems == ["no recorded approval", f"sign-off missing: {', '.join(SIGN_OFFS)}"]
    assert reg.resolve("ranker", "acme", "production") is None
    assert not [a for a in reg.audit() if a.action == "promote"]


def test_failed_automatic_checks_block_the_approval_and_the_promotion(reg, tmp_path):
    v = _publish(reg, tmp_path, "a", metrics={"click_auc": 0.7})  # like_auc missing
    blocking = review_versions(reg, "acme", {"ranker": v}, ReviewConfig(), actor="rita",
                               sign_offs=SIGN_OFFS, approve=True)  # fmt: skip
    assert blocking == {"ranker": ["automatic check metrics_present failed"]}
    assert "approve" not in [r.decision for r in reg.reviews("ranker", "acme", v)]
    with pytest.raises(PromotionRefused, match="no recorded approval"):
        reg.promote("ranker", "acme", v, actor="ada")
    # An approval written past the review tool still does not pass failed or missing checks.
    failed = {"metrics_present": {"ok": False, "detail": "missing ['like_auc']", "item": "offline_metrics"}}
    reg.add_review(ReviewRecord(kind="ranker", tenant="acme", version=v, at=datetime.now(UTC),
                                actor="mallory", decision="approve", checks=failed))  # fmt: skip
    with pytest.raises(PromotionRefused) as refused:
        reg.promote("ranker", "acme", v, actor="mallory")
    assert refused.value.problems == [
        "automatic check metrics_present failed",
        "automatic check for feature_compatibility not run",
    ]


def test_each_missing_sign_off_is_named_until_recorded(reg, tmp_path):
    v = _publish(reg, tmp_path, "a")
    almost = tuple(s for s in SIGN_OFFS if s != "privacy_review")
    blocking = review_versions(reg, "acme", {"ranker": v}, ReviewConfig(), actor="rita",
                               sign_offs=almost, approve=True)  # fmt: skip
    assert blocking == {"ranker": ["sign-off missing: privacy_review"]}
    review_versions(reg, "acme", {"ranker": v}, ReviewConfig(), actor="pia", sign_offs=("privacy_review",))
    assert reg.promotion_problems("ranker", "acme", v) == ["no recorded approval"]
    assert review_versions(reg, "acme", {"ranker": v}, ReviewConfig(), actor="rita", approve=True) == {"ranker": []}
    assert reg.promote("ranker", "acme", v, actor="ada", reason="launch")["production"] == v
    signers = {(r.item, r.actor) for r in reg.reviews("ranker", "acme", v) if r.decision == "sign_off"}
    assert ("privacy_review", "pia") in signers and ("rollback_plan", "rita") in signers


def test_a_rejection_after_the_approval_blocks_promotion(reg, tmp_path):
    v = _publish(reg, tmp_path, "a")
    approve(reg, "ranker", "acme", v)
    review_versions(reg, "acme", {"ranker": v}, ReviewConfig(), actor="vic", reject=True, comment="hides up 3%")
    with pytest.raises(PromotionRefused, match=r"rejected by vic \(hides up 3%\)"):
        reg.promote("ranker", "acme", v, actor="ada")


def test_production_moves_only_through_promote_and_rollback(reg, tmp_path):
    v = _publish(reg, tmp_path, "a")
    for alias in ("production", "previous"):
        with pytest.raises(RegistryError, match="moves only by promote"):
            reg.set_alias("ranker", "acme", alias, v, actor="ada")


def test_break_glass_needs_an_emergency_role_and_a_reason_and_is_flagged(reg, tmp_path):
    v1, v2, v3 = (_publish(reg, tmp_path, n) for n in ("a", "b", "c"))
    approve(reg, "ranker", "acme", v1)
    reg.promote("ranker", "acme", v1, actor="ada")
    with pytest.raises(PromotionRefused, match="'ada' is in no emergency role.*emergency roles: sre-oncall"):
        reg.promote("ranker", "acme", v2, actor="ada", reason="incident 42", break_glass=True)
    with pytest.raises(PromotionRefused, match="break-glass needs a reason"):
        reg.promote("ranker", "acme", v2, actor="sam", reason=" ", break_glass=True)
    assert reg.resolve("ranker", "acme", "production") == v1

    reg.promote("ranker", "acme", v2, actor="sam", reason="incident 42: v1 serves stale items", break_glass=True)
    prod = reg.production_versions("acme")["ranker"]
    assert (prod.version, prod.break_glass, prod.actor) == (v2, True, "sam")
    moves = [a for a in reg.audit("ranker", "acme") if a.action == "promote"][-2:]
    assert [(a.alias, a.version, a.previous, a.break_glass, a.role) for a in moves] == [
        ("previous", v1, None, True, "sre-oncall"),
        ("production", v2, v1, True, "sre-oncall"),
    ]
    assert moves[-1].reason == "incident 42: v1 serves stale items"

    # A reviewed promotion clears the flag; the break-glass version keeps its flag as previous.
    approve(reg, "ranker", "acme", v3)
    reg.promote("ranker", "acme", v3, actor="ada")
    assert reg.production_versions("acme")["ranker"].break_glass is False
    assert reg.alias_record("ranker", "acme", "previous").break_glass is True
    reg.rollback("ranker", "acme", actor="ada", reason="v3 regressed")
    prod = reg.production_versions("acme")["ranker"]
    assert (prod.version, prod.break_glass) == (v2, True)  # the flag travels with the version


def test_rollback_always_works_and_is_audited_with_before_and_after(reg, tmp_path):
    v1, v2 = (_publish(reg, tmp_path, n) for n in ("a", "b"))
    for v in (v1, v2):
        approve(reg, "ranker", "acme", v)
        reg.promote("ranker", "acme", v, actor="ada")
    # Even with v1's approval rejected since, and a freeze on: rollback is not gated.
    review_versions(reg, "acme", {"ranker": v1}, ReviewConfig(), actor="vic", reject=True)
    frozen = Registry(reg.uri, policy=_freeze(POLICY))
    aliases = frozen.rollback("ranker", "acme", actor="bob", reason="ctr dropped")
    assert (aliases["production"], aliases["previous"]) == (v1, v2)
    last = frozen.audit("ranker", "acme")[-2]
    assert (last.action, last.alias, last.previous, last.version) == ("rollback", "production", v2, v1)
    assert (last.actor, last.reason) == ("bob", "ctr dropped") and last.at.tzinfo is not None


def test_review_decisions_are_audited(reg, tmp_path):
    v = _publish(reg, tmp_path, "a")
    approve(reg, "ranker", "acme", v, actor="rita")
    reviews = [a for a in reg.audit("ranker", "acme") if a.action == "review"]
    assert [(a.decision, a.item) for a in reviews] == [("sign_off", s) for s in SIGN_OFFS] + [("approve", None)]
    assert {(a.actor, a.version) for a in reviews} == {("rita", v)}


def _freeze(policy: PromotionPolicy, **kw) -> PromotionPolicy:
    now = datetime.now(UTC)
    window = FreezeWindow(name="year-end", start=now - timedelta(hours=1), end=now + timedelta(hours=1),
                          reason="peak", **kw)  # fmt: skip
    return policy.model_copy(update={"freezes": (window,)})


def test_a_freeze_refuses_promotion_but_not_break_glass_or_other_tenants(tmp_path):
    reg = Registry(str(tmp_path / "reg"), policy=_freeze(POLICY, tenants=("acme",), kinds=("ranker",)))
    v = _publish(reg, tmp_path, "a")
    approve(reg, "ranker", "acme", v)
    with pytest.raises(PromotionRefused, match="change freeze 'year-end' until"):
        reg.promote("ranker", "acme", v, actor="ada")
    later = datetime.now(UTC) + timedelta(hours=2)
    assert reg.promote("ranker", "acme", v, actor="ada", now=later)["production"] == v
    assert not reg.policy.freeze_at("ranker", "globex") and not reg.policy.freeze_at("two_tower", "acme")
    v2 = _publish(reg, tmp_path, "b")
    reg.promote("ranker", "acme", v2, actor="sam", reason="hotfix", break_glass=True)
    assert reg.resolve("ranker", "acme", "production") == v2


def test_the_policy_file_is_strict(tmp_path):
    shipped = load_promotion_policy()
    assert shipped.checklist("ranker").automatic == ("offline_metrics", "feature_compatibility")
    bad = tmp_path / "promotion.yaml"
    bad.write_text("default:\n  sign_offs: [privacy]\n")
    with pytest.raises(ValueError, match="default.sign_offs.0"):
        load_promotion_policy(bad)
    with pytest.raises(ValueError, match="both automatic and signed off"):
        KindChecklist(automatic=("dashboards",), sign_offs=("dashboards",))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_refuses_in_one_line_and_flags_break_glass(tmp_path, capsys, monkeypatch):
    policy = tmp_path / "promotion.yaml"
    policy.write_text("emergency_roles:\n  sre-oncall: [sam]\n")
    monkeypatch.setenv("RECSYS_PROMOTION_POLICY", str(policy))
    root = str(tmp_path / "reg")
    reg = Registry(root)
    v = _publish(reg, tmp_path, "a")
    code, _, err = _run(capsys, "registry", "promote", "ranker", v, "--tenant", "acme", "--root", root)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no recorded approval" in err and "privacy_review" in err and "Traceback" not in err

    code, _, err = _run(capsys, "registry", "promote", "ranker", v, "--tenant", "acme", "--root", root,
                        "--break-glass", "--actor", "sam")  # fmt: skip
    assert code == 2 and "break-glass needs a reason" in err
    code, out, _ = _run(capsys, "registry", "promote", "ranker", v, "--tenant", "acme", "--root", root,
                        "--break-glass", "--actor", "sam", "--reason", "incident 42")  # fmt: skip
    assert code == 0 and "BREAK-GLASS" in out
    code, out, _ = _run(capsys, "registry", "production", "--tenant", "acme", "--root", root)
    assert code == 0 and v in out and "YES" in out and "incident 42" in out
    code, out, _ = _run(capsys, "registry", "audit", "--root", root)
    assert code == 0 and "BREAK-GLASS (sre-oncall)" in out
    code, out, _ = _run(capsys, "registry", "show", "ranker", v, "--tenant", "acme", "--root", root)
    assert code == 0 and "promotion gate: no recorded approval" in out  # review it after the fact


def test_recsys_review_records_sign_offs_and_approval(tmp_path, capsys, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    monkeypatch.setenv("RECSYS_CONFIG", str(repo / "configs/platform.yaml"))
    monkeypatch.delenv("RECSYS_PROMOTION_POLICY", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_DASHBOARD_ADDRESS", raising=False)
    from core.config import load_platform_config

    reg = Registry(load_platform_config().resolved_storage().registry)
    v = _publish(reg, tmp_path, "a")
    review = ["review", "--config", str(repo / "configs/train/pipeline.yaml"), "--tenant", "acme", "--kind", "ranker"]
    code, out, _ = _run(capsys, *review, "--approve", "--actor", "rita")
    assert code == 1 and "sign-off missing" in out and "privacy_review" in out
    items = [a for s in reg.policy.checklist("ranker").sign_offs for a in ("--sign-off", s)]
    code, out, _ = _run(capsys, *review, *items, "--approve", "--actor", "rita")
    assert code == 0 and "approved: may be promoted" in out
    assert reg.promote("ranker", "acme", v, actor="ada")["production"] == v
