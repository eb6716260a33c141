from __future__ import annotations

from core.config import ExperimentConfig, SlateConfig, SurfaceConfig, VariantOverrides
from core.experiments import assign, effective_surface


def _exp(salt: str = "s1", weights=(50, 50), enabled: bool = True) -> ExperimentConfig:
    return ExperimentConfig(
        id="exp",
        tenant="acme",
        surfaces=["home"],
        salt=salt,
        enabled=enabled,
        variants=[{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)],
    )


def test_assignment_is_deterministic() -> None:
    exps = [_exp()]
    first = [assign(exps, "acme", "home", f"u{i}").arm for i in range(200)]
    again = [assign(exps, "acme", "home", f"u{i}").arm for i in range(200)]
    assert first == again
    assert assign(exps, "acme", "home", "u1").experiment_id == "exp"


def test_split_proportions_follow_weights() -> None:
    exps = [_exp(weights=(20, 30, 50))]
    arms = [assign(exps, "acme", "home", f"user-{i}").arm for i in range(10_000)]
    for arm, share in (("v0", 0.2), ("v1", 0.3), ("v2", 0.5)):
        assert abs(arms.count(arm) / 10_000 - share) < 0.02


def test_salt_changes_assignment() -> None:
    a = [assign([_exp("salt-a")], "acme", "home", f"u{i}").arm for i in range(1000)]
    b = [assign([_exp("salt-b")], "acme", "home", f"u{i}").arm for i in range(1000)]
    moved = sum(x != y for x, y in zip(a, b, strict=True)) / 1000
    assert 0.35 < moved < 0.65  # independent 50/50 splits disagree about half the time


def test_default_arm_when_no_enabled_experiment_covers_request() -> None:
    assert assign([_exp()], "acme", "item_page", "u1").arm == "default"
    assert assign([_exp()], "globex", "home", "u1").arm == "default"
    assert assign([_exp(enabled=False)], "acme", "home", "u1").arm == "default"


def test_effective_surface_applies_overrides() -> None:
    base = SurfaceConfig(sources=[{"name": "trending", "kind": "trending"}])
    over = VariantOverrides(
        task_weights={"click": 1.0, "like": 5.0},
        sources=[{"name": "fresh", "kind": "fresh", "quota": 7}],
        slate=SlateConfig(steps=[{"kind": "diversity", "max_per_category": 1}]),
        ranker_version="v-other",
    )
    eff = effective_surface(base, over)
    assert eff.ranker.task_weights == {"click": 1.0, "like": 5.0}
    assert eff.ranker.timeout_ms == base.ranker.timeout_ms
    assert [s.name for s in eff.sources] == ["fresh"] and eff.sources[0].quota == 7
    assert eff.slate.step("diversity").max_per_category == 1
    assert effective_surface(base, None) is base
    assert effective_surface(base, VariantOverrides()) == base


def _planned(**change) -> dict:
    plan = {
        "id": "exp", "tenant": "acme", "surfaces": ["home"], "salt": "s", "unit": "user_id",
        "hypothesis": "h", "primary_metric": "click_rate", "planned_duration_days": 14,
        "guardrails": [{"metric": "hide_rate", "max_degradation": 0.1}],
        "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
    }  # fmt: skip
    return {**plan, **change}


def test_an_experiment_plan_is_complete_and_its_arms_cover_all_traffic() -> None:
    from core.experiments import check_experiment_plan

    assert check_experiment_plan(ExperimentConfig(**_planned())) == []
    bare = ExperimentConfig(**_planned(hypothesis=None, primary_metric=None, guardrails=[],
                                       planned_duration_days=None))  # fmt: skip
    assert {k for k, _ in check_experiment_plan(bare)} == {
        "hypothesis", "primary_metric", "guardrails", "planned_duration_days"}
    short = ExperimentConfig(**_planned(variants=[{"name": "control", "weight": 50},
                                                  {"name": "treatment", "weight": 40}]))  # fmt: skip
    assert check_experiment_plan(short) == [("variants", "arm weights add up to 90, not 100 (percent)")]
    no_control = ExperimentConfig(**_planned(control="baseline"))
    assert [k for k, _ in check_experiment_plan(no_control)] == ["control"]
    alone = ExperimentConfig(**_planned(variants=[{"name": "control", "weight": 100}]))
    assert [k for k, _ in check_experiment_plan(alone)] == ["variants"]


def test_config_validate_refuses_an_unplanned_experiment_naming_file_and_key(tmp_path, capsys) -> None:
    import yaml

    from cluster.cli import main

    data = yaml.safe_load(open("configs/platform.yaml"))
    del data["experiments"][0]["hypothesis"]
    data["experiments"][0]["variants"][1]["weight"] = 30
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["config", "validate", str(path)]) != 0
    out = capsys.readouterr().out
    assert str(path) in out and "experiments.0.hypothesis: required by the experiment plan" in out
    assert "experiments.0.variants: arm weights add up to 80, not 100 (percent)" in out
