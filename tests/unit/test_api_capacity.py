"""Capacity planner math: measured per-replica throughput -> replicas -> serve.yaml patch."""

from __future__ import annotations

import json

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster.capacity import (
    apply_plan,
    load_measurements,
    patch_of,
    plan_capacity,
    replicas_needed,
)


@pytest.mark.parametrize(
    ("target", "per_replica", "headroom", "expected"),
    [(50, 100, 0.3, 1), (100, 100, 0.0, 1), (100, 100, 0.3, 2), (300, 100, 0.0, 3),
     (301, 100, 0.0, 4), (0, 100, 0.3, 1), (1000, 33.3, 0.2, 37)],
)  # fmt: skip
def test_replicas_cover_target_with_headroom(target, per_replica, headroom, expected):
    assert replicas_needed(target, per_replica, headroom) == expected


def test_float_noise_does_not_add_a_replica():
    assert replicas_needed(0.3 * 10, 1.0, 0.0) == 3  # 3.0000000000000004


def test_invalid_inputs_are_errors():
    with pytest.raises(ValueError):
        replicas_needed(10, 0)
    with pytest.raises(ValueError):
        replicas_needed(-1, 10)


GPU_SHAPE = {"source_kinds": {"two_tower": "deployment"}, "ranker": "deployment"}
CPU_SHAPE = {"source_kinds": {"two_tower": "ingress"}, "ranker": "ingress"}


def _serve_config(path: str = "configs/serve.yaml") -> dict:
    return yaml.safe_load(open(path))


def test_plan_and_patch(tmp_path):
    """The GPU shape: the Ranker scales on its own figure."""
    measured_file = tmp_path / "serving.json"
    measured_file.write_text(json.dumps({"capacity": {"per_replica_rps": {
        "Ingress": 200.0, "Ranker": 40.0, "TwoTowerRetriever": 0}}}))  # fmt: skip
    measured = load_measurements(measured_file)
    assert measured == {"Ingress": 200.0, "Ranker": 40.0}  # zero = not measured
    config = _serve_config("configs/serve.gpu.yaml")
    plan = plan_capacity(config, measured, target_rps=100, headroom=0.2, measured_placement=GPU_SHAPE)
    assert plan.replicas() == {"Ingress": 1, "Ranker": 3}
    assert "TwoTowerRetriever" in plan.unmeasured
    assert plan.total_cpus == pytest.approx(1 * 0.6 + 3 * 0.4)

    fixed = apply_plan(config, plan)
    ServeDeploySchema.model_validate(fixed)
    ranker = next(d for d in fixed["applications"][0]["deployments"] if d["name"] == "Ranker")
    assert ranker["num_replicas"] == 3 and "autoscaling_config" not in ranker
    assert config != fixed  # the input is not modified

    auto = apply_plan(config, plan, autoscale=True)
    ServeDeploySchema.model_validate(auto)
    ranker = next(d for d in auto["applications"][0]["deployments"] if d["name"] == "Ranker")
    assert ranker["autoscaling_config"]["min_replicas"] == 3
    assert ranker["autoscaling_config"]["max_replicas"] >= 6

    patch = patch_of(plan, config)
    assert patch == {"applications": [{"name": "recsys", "deployments": [
        {"name": "Ingress", "num_replicas": 1}, {"name": "Ranker", "num_replicas": 3}]}]}  # fmt: skip


def test_missing_measurements_are_a_clear_error(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{}")
    with pytest.raises(ValueError, match="per_replica_rps"):
        load_measurements(f)


def test_the_shipped_cpu_shape_scales_the_ingress():
    """configs/serve.yaml (both models in the Ingress): the Ingress replicas are what a target
    rate buys, planned from the figure measured in that shape (per replica: the graph's clean
    rate over its two replicas)."""
    config = _serve_config()
    measured = {"Ingress": 37.5}  # 75 req/s served by 2 Ingress replicas
    plan = plan_capacity(config, measured, target_rps=100, headroom=0.3, measured_placement=CPU_SHAPE)
    assert plan.replicas() == {"Ingress": 4}  # ceil(130 / 37.5); the Ingress writes its records
    assert plan.total_cpus == pytest.approx(4 * 0.6)
    patch = patch_of(plan, config)
    assert patch["applications"][0]["deployments"][0] == {"name": "Ingress", "num_replicas": 4}


def test_figures_from_another_shape_are_refused():
    """An Ingress replica that calls model deployments serves more than one that runs both
    models: a figure measured in one shape would under-provision the other."""
    with pytest.raises(ValueError, match="measured with two_tower in the deployment, ranker in the deployment"):
        plan_capacity(_serve_config(), {"Ingress": 30.0}, target_rps=50, measured_placement=GPU_SHAPE)
    with pytest.raises(ValueError, match="this config has two_tower in the deployment"):
        plan_capacity(_serve_config("configs/serve.gpu.yaml"), {"Ingress": 30.0}, target_rps=50,
                      measured_placement=CPU_SHAPE)  # fmt: skip
    # An older result's placement without model keys means the models' defaults (deployments).
    plan = plan_capacity(_serve_config("configs/serve.gpu.yaml"), {"Ingress": 30.0}, target_rps=50,
                         measured_placement={"user_state": "ingress", "sources": "ingress"})  # fmt: skip
    assert plan.replicas() == {"Ingress": 3}
