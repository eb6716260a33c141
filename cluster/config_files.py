"""Which schema validates which file under ``configs/``.

``recsys config validate`` and the test that validates every YAML file in ``configs/`` both go
through :func:`validate_file`, so a new kind of config file is added here once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import ConfigError, ConfigIssue, PlatformConfig, load_model, read_yaml


def validate_serve_config(path: str | Path) -> Any:
    """Validate a ``serve deploy`` file against Ray Serve's schema, whatever its name."""
    # Ray Serve's own schema for `serve deploy` files. Imported lazily: core must stay usable
    # without starting anything, and the schema module is pure pydantic.
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    data = read_yaml(path)
    try:
        return ServeDeploySchema.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(
            [
                ConfigIssue(file=str(path), key=".".join(str(p) for p in e["loc"]), message=e["msg"])
                for e in exc.errors()
            ]
        ) from None


TRAIN_SCHEMAS = {
    "two_tower": "TwoTowerTrainConfig",
    "ranker": "RankerTrainConfig",
    "build_index": "BuildIndexConfig",
    "evaluate": "EvaluateConfig",
    "pipeline": "PipelineConfig",
    "quality_gate": "QualityGateConfig",
    "batch_score": "BatchScoreConfig",
    "fallback_lists": "FallbackListsConfig",
    "analyze_experiment": "AnalyzeExperimentConfig",
}
"""``configs/train/<stem>.yaml`` → its model in ``core.train_config`` (matched by stem prefix,
so ``two_tower_large.yaml`` is a two-tower config too)."""


def _validate_train(path: Path) -> Any:
    train_config = importlib.import_module("core.train_config")
    for stem, name in TRAIN_SCHEMAS.items():
        if path.stem.startswith(stem):
            return load_model(path, getattr(train_config, name))
    known = ", ".join(f"{s}*.yaml" for s in TRAIN_SCHEMAS)
    raise ConfigError([ConfigIssue(file=str(path), key="", message=f"no schema; expected {known}")])


def _validate_alerts(path: Path) -> Any:
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise ConfigError([ConfigIssue(file=str(path), key="groups", message="expected a list")])
    for i, group in enumerate(data["groups"]):
        for j, rule in enumerate(group.get("rules", [])):
            for key in ("alert", "expr"):
                if key not in rule:
                    raise ConfigError(
                        [
                            ConfigIssue(
                                file=str(path),
                                key=f"groups.{i}.rules.{j}.{key}",
                                message="required key is missing",
                            )
                        ]
                    )
    return data


def _validate_promotion(path: Path) -> Any:
    from core.promotion import load_promotion_policy

    try:
        return load_promotion_policy(path)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(file=str(path), key="", message=str(exc))]) from None


def _validate_owners(path: Path) -> Any:
    """The owners file: its schema, every kind covered, no unknown kind."""
    from core.owners import load_owners

    try:
        owners = load_owners(path)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(file=str(path), key="", message=str(exc))]) from None
    issues = [ConfigIssue(file=str(path), key="owners", message=f"no `tenant: \"*\"` entry for kind {k}")
              for k in owners.missing_kinds()]  # fmt: skip
    issues += [ConfigIssue(file=str(path), key="owners", message=f"unknown kind {k}") for k in owners.unknown_kinds()]
    if issues:
        raise ConfigError(issues)
    return owners


def validator_for(path: str | Path) -> Callable[[Path], Any]:
    path = Path(path)
    name = path.name
    parts = path.parts
    if name.startswith("serve") and name.endswith((".yaml", ".yml")):
        return validate_serve_config
    if "train" in parts:
        return _validate_train
    if "alerts" in parts or name.startswith("alerts"):
        return _validate_alerts
    if name.startswith("promotion") and name.endswith((".yaml", ".yml")):
        return _validate_promotion
    if name.startswith("owners") and name.endswith((".yaml", ".yml")):
        return _validate_owners
    return _validate_platform


def _validate_platform(path: Path) -> PlatformConfig:
    """The schema, then each experiment's plan (:func:`core.experiments.check_experiments`)."""
    from core.experiments import check_experiments

    config = load_model(path, PlatformConfig)
    problems = check_experiments(config.experiments)
    if problems:
        raise ConfigError([ConfigIssue(file=str(path), key=k, message=m) for k, m in problems])
    return config


def validate_file(path: str | Path) -> Any:
    """Validate one config file with the schema its location implies; raises ConfigError."""
    return validator_for(path)(Path(path))
