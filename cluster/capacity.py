"""Capacity planning: measured per-replica throughput -> replica counts -> a serve.yaml patch.

The benchmark (``benchmarks/bench_serving.py``) writes, per deployment, the request rate one
replica sustains on the measuring machine (``capacity.per_replica_rps``). For a target rate
``R`` with headroom ``h`` (spare capacity for bursts and for losing a replica), each
deployment needs ``ceil(R * (1 + h) / per_replica_rps)`` replicas, at least ``min_replicas``.
Every request visits every deployment once (the graph is a fan-out, not a chain of optional
hops), so the same ``R`` applies to each. In the CPU-only shape (``configs/serve.yaml``: both
models inside the Ingress) the Ingress is the unit that scales; in the GPU shape
(``configs/serve.gpu.yaml``) the Ranker and the retriever scale on their own. A figure is only
valid for the shape it was measured in (where the models run changes what one replica does),
so a plan refuses figures measured with the models placed otherwise (:func:`shape_mismatch`).

The numbers are only as good as the machine they were measured on: re-measure on the target
hardware before trusting a plan (``docs/runbooks/capacity.md``).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.serve_files import applications, config_model_homes, deployments, model_homes


@dataclass(frozen=True)
class DeploymentPlan:
    name: str
    replicas: int
    per_replica_rps: float
    cpus_per_replica: float
    gpus_per_replica: float

    @property
    def cpus(self) -> float:
        return self.replicas * self.cpus_per_replica


@dataclass
class CapacityPlan:
    target_rps: float
    headroom: float
    deployments: list[DeploymentPlan] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)
    """Deployments in the serve config with no measurement; left unchanged by the patch."""

    @property
    def total_cpus(self) -> float:
        return sum(d.cpus for d in self.deployments)

    @property
    def total_gpus(self) -> float:
        return sum(d.replicas * d.gpus_per_replica for d in self.deployments)

    def replicas(self) -> dict[str, int]:
        return {d.name: d.replicas for d in self.deployments}


def replicas_needed(target_rps: float, per_replica_rps: float, headroom: float = 0.3,
                    min_replicas: int = 1) -> int:  # fmt: skip
    """Smallest replica count whose summed throughput covers ``target_rps * (1 + headroom)``."""
    if target_rps < 0 or headroom < 0:
        raise ValueError("target_rps and headroom must be non-negative")
    if per_replica_rps <= 0:
        raise ValueError("per_replica_rps must be positive")
    needed = target_rps * (1.0 + headroom) / per_replica_rps
    # Round away float noise first: 3.0000000001 replicas is 3 replicas, not 4.
    return max(min_replicas, math.ceil(round(needed, 6)))


def load_measurements(path: str | Path) -> dict[str, float]:
    """``capacity.per_replica_rps`` from a benchmark result file (deployment -> req/s)."""
    data = json.loads(Path(path).read_text())
    try:
        measured = data["capacity"]["per_replica_rps"]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: no capacity.per_replica_rps (run benchmarks/bench_serving.py)") from None
    return {str(k): float(v) for k, v in measured.items() if v and float(v) > 0}


def shape_mismatch(config: dict[str, Any], measured_placement: dict[str, Any] | None,
                   app_name: str | None = None) -> str | None:  # fmt: skip
    """Why figures measured with the models at ``measured_placement`` (the benchmark's
    ``placement``) cannot plan ``config``, or None when both put the models in the same place.
    A replica's throughput depends on what it holds: an Ingress replica that runs both models
    serves far fewer requests than one that calls model deployments."""
    planned, measured = config_model_homes(config, app_name), model_homes(measured_placement)
    if planned == measured:
        return None
    show = lambda homes: ", ".join(f"{k} in the {v}" for k, v in homes.items())  # noqa: E731
    return (f"measured with {show(measured)}; this config has {show(planned)}: measure this "
            "shape first (python -m benchmarks.bench_serving --config FILE)")


def plan_capacity(config: dict[str, Any], measured: dict[str, float], target_rps: float,
                  headroom: float = 0.3, app_name: str | None = None,
                  measured_placement: dict[str, Any] | None = None) -> CapacityPlan:  # fmt: skip
    """Replicas per deployment of ``config`` for ``target_rps``. ``measured_placement``: where
    the measurement had the models (ValueError when ``config`` puts them elsewhere: see
    :func:`shape_mismatch`); None skips the check (figures from elsewhere)."""
    if measured_placement is not None and (why := shape_mismatch(config, measured_placement, app_name)):
        raise ValueError(why)
    plan = CapacityPlan(target_rps=target_rps, headroom=headroom)
    for dep in deployments(config, app_name):
        name = dep["name"]
        if name not in measured:
            plan.unmeasured.append(name)
            continue
        opts = dep.get("ray_actor_options") or {}
        plan.deployments.append(
            DeploymentPlan(
                name=name,
                replicas=replicas_needed(target_rps, measured[name], headroom),
                per_replica_rps=measured[name],
                cpus_per_replica=float(opts.get("num_cpus", 1.0)),
                gpus_per_replica=float(opts.get("num_gpus", 0.0)),
            )
        )
    return plan


def apply_plan(config: dict[str, Any], plan: CapacityPlan, *, autoscale: bool = False,
               app_name: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A copy of ``config`` with the planned replica counts.

    Fixed (default): ``num_replicas`` = plan, any ``autoscaling_config`` removed.
    ``autoscale``: ``autoscaling_config.min_replicas`` = plan and ``max_replicas`` at least
    twice that, ``num_replicas`` removed (Serve refuses both at once).
    """
    out = copy.deepcopy(config)
    wanted = plan.replicas()
    for dep in deployments(out, app_name):
        n = wanted.get(dep["name"])
        if n is None:
            continue
        if autoscale:
            dep.pop("num_replicas", None)
            auto = dep.setdefault("autoscaling_config", {})
            auto["min_replicas"] = n
            auto["max_replicas"] = max(int(auto.get("max_replicas", 0)), 2 * n)
        else:
            dep.pop("autoscaling_config", None)
            dep["num_replicas"] = n
    return out


def patch_of(plan: CapacityPlan, config: dict[str, Any], *, autoscale: bool = False) -> dict:
    """Only the changed keys, shaped like serve.yaml (for printing and review)."""
    apps = []
    for app in applications(config):
        deps = []
        names = {d["name"] for d in app.get("deployments") or []}
        for d in plan.deployments:
            if d.name not in names:
                continue
            if autoscale:
                deps.append({"name": d.name, "autoscaling_config": {"min_replicas": d.replicas}})
            else:
                deps.append({"name": d.name, "num_replicas": d.replicas})
        if deps:
            apps.append({"name": app.get("name"), "deployments": deps})
    return {"applications": apps}
