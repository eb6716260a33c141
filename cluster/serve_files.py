"""The two shipped Serve configs, which node each is for, and the shape a config gives the graph.

* ``configs/serve.yaml`` (:data:`SERVE_CPU`): CPU-only nodes, the default of ``recsys deploy``
  and ``make demo``. Both models inside two Ingress replicas; no model deployments.
* ``configs/serve.gpu.yaml`` (:data:`SERVE_GPU`): nodes with a GPU. The ``TwoTowerRetriever``
  and ``Ranker`` deployments, the Ranker on GPU replicas with ``@serve.batch``.

Why each shape goes with its node is measured (``docs/architecture.md``, "The models' home").
:func:`without_gpus` lets the GPU shape run on a CPU-only machine (tests, benchmarks), and
:func:`model_homes` says where a config puts the models, so that throughput measured in one
shape is never used to plan another (``cluster/capacity.py``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SERVE_CPU = CONFIGS / "serve.yaml"
SERVE_GPU = CONFIGS / "serve.gpu.yaml"


def applications(config: dict[str, Any], app_name: str | None = None) -> list[dict[str, Any]]:
    """The config's applications, or only the one named ``app_name`` (ValueError if none)."""
    apps = config.get("applications") or []
    if app_name is not None:
        apps = [a for a in apps if a.get("name") == app_name]
        if not apps:
            raise ValueError(f"no application named {app_name!r} in the serve config")
    return apps


def deployments(config: dict[str, Any], app_name: str | None = None) -> list[dict[str, Any]]:
    """Every deployment of the config's applications (or of the one named ``app_name``)."""
    return [d for a in applications(config, app_name) for d in a.get("deployments") or []]


def env_vars(config: dict[str, Any]) -> dict[str, str]:
    """The ``runtime_env.env_vars`` of every application, as strings (the Serve settings that
    the proxies and the controller must read from their own environment too)."""
    return {k: str(v) for a in applications(config) for k, v in ((a.get("runtime_env") or {}).get("env_vars") or {}).items()}


def model_homes(placement: dict[str, Any] | None) -> dict[str, str]:
    """Where an ``args.placement`` block (or a benchmark's recorded one) runs the two models:
    ``{"two_tower": "ingress" | "deployment", "ranker": ...}``, defaults filled in."""
    from deployments.settings import Placement

    p = Placement.model_validate(placement or {})
    return {"two_tower": p.source_kinds["two_tower"], "ranker": p.ranker}


def config_model_homes(config: dict[str, Any], app_name: str | None = None) -> dict[str, str]:
    """:func:`model_homes` of a serve config's (first, or named) application."""
    apps = applications(config, app_name)
    return model_homes(((apps[0].get("args") or {}).get("placement")) if apps else None)


def replica_counts(app: dict[str, Any]) -> dict[str, int]:
    """Deployment name -> replicas an application config starts (``num_replicas``, else the
    autoscaling minimum; 1 where neither is set, Serve's default)."""
    return {d["name"]: d.get("num_replicas") or (d.get("autoscaling_config") or {}).get("min_replicas", 1)
            for d in app.get("deployments") or []}  # fmt: skip


def without_gpus(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` that runs on a CPU-only node: no deployment reserves a GPU, and a
    ``user_config.device`` of ``cuda`` becomes ``cpu`` (``cuda`` without a GPU is refused)."""
    out = copy.deepcopy(config)
    for app in applications(out):
        for dep in app.get("deployments") or []:
            opts = dep.get("ray_actor_options") or {}
            if opts.get("num_gpus"):
                opts["num_gpus"] = 0
            user = dep.get("user_config") or {}
            if str(user.get("device", "")).startswith("cuda"):
                user["device"] = "cpu"
    return out
