"""Deterministic experiment assignment and the per-arm effective surface configuration.

Invariants:

* Assignment is a pure function of ``(experiment.salt, unit_id)``: the same user gets the same
  arm in every process, replica and Python version (sha256, never ``hash``), and changing the
  salt reshuffles users independently of any other experiment.
* Variants split ``[0, 1)`` by cumulative normalised weight, so an arm's share of units
  converges to ``weight / sum(weights)``.
* A request that no enabled experiment covers gets the ``"default"`` arm, and a surface
  under the default arm is exactly the tenant's configured surface.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from core.config import ExperimentConfig, RankerConfig, SurfaceConfig, VariantOverrides
from core.contracts import ExperimentAssignment

DEFAULT_ARM = "default"
NO_EXPERIMENT = ""


def unit_hash(salt: str, unit_id: str) -> float:
    """``sha256(salt:unit_id)`` mapped to a float in ``[0, 1)`` (first 8 bytes / 2**64)."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def pick_variant(experiment: ExperimentConfig, unit_id: str) -> str:
    total = sum(v.weight for v in experiment.variants)
    u = unit_hash(experiment.salt, unit_id) * total
    upto = 0.0
    for variant in experiment.variants:
        upto += variant.weight
        if u < upto:
            return variant.name
    return experiment.variants[-1].name  # float rounding at the very top of the range


def covering_experiment(
    experiments: Sequence[ExperimentConfig], tenant: str, surface: str
) -> ExperimentConfig | None:
    """The first enabled experiment on ``(tenant, surface)``. Config order decides overlaps,
    so a request is in at most one experiment per surface."""
    for exp in experiments:
        if exp.enabled and exp.tenant == tenant and surface in exp.surfaces:
            return exp
    return None


def assign(
    experiments: Sequence[ExperimentConfig], tenant: str, surface: str, unit_id: str
) -> ExperimentAssignment:
    exp = covering_experiment(experiments, tenant, surface)
    if exp is None:
        return ExperimentAssignment(experiment_id=NO_EXPERIMENT, arm=DEFAULT_ARM)
    return ExperimentAssignment(experiment_id=exp.id, arm=pick_variant(exp, unit_id))


def effective_surface(
    surface_cfg: SurfaceConfig, overrides: VariantOverrides | None
) -> SurfaceConfig:
    """``surface_cfg`` with a variant's overrides applied (sources and slate replace the
    surface's wholesale, task weights replace the ranker's). ``ranker_version`` is not part of
    a surface; the ranker stage reads it from the overrides itself."""
    if overrides is None:
        return surface_cfg
    update: dict = {}
    if overrides.sources is not None:
        update["sources"] = overrides.sources
    if overrides.slate is not None:
        update["slate"] = overrides.slate
    if overrides.task_weights is not None:
        update["ranker"] = RankerConfig(
            **{**surface_cfg.ranker.model_dump(), "task_weights": overrides.task_weights}
        )
    if not update:
        return surface_cfg
    # Re-validate so a variant cannot produce a surface the schema would reject.
    return SurfaceConfig.model_validate({**surface_cfg.model_dump(), **_dump(update)})


def _dump(update: dict) -> dict:
    out = {}
    for key, value in update.items():
        if isinstance(value, list):
            out[key] = [v.model_dump() for v in value]
        else:
            out[key] = value.model_dump()
    return out


def pinned_versions(experiments: Sequence[ExperimentConfig], field: str) -> list[tuple[str, str]]:
    """``(tenant, version)`` for every enabled arm that pins a model through ``field`` of its
    overrides (``ranker_version``, ``two_tower_pin``), deduplicated, in config order: what a replica holding
    that model loads besides production."""
    out: dict[tuple[str, str], None] = {}
    for exp in experiments:
        if not exp.enabled:
            continue
        for variant in exp.variants:
            version = getattr(variant.overrides, field, None)
            if version:
                out[(exp.tenant, version)] = None
    return list(out)


def pinned_two_towers(experiments: Sequence[ExperimentConfig]) -> list[tuple[str, tuple[str, str]]]:
    """``(tenant, (two_tower, ann_index))`` for every enabled arm that pins a two-tower pair."""
    return pinned_versions(experiments, "two_tower_pin")


PLAN_FIELDS = ("hypothesis", "primary_metric", "guardrails", "unit", "planned_duration_days")
TRAFFIC_PERCENT = 100.0


def check_experiment_plan(experiment: ExperimentConfig) -> list[tuple[str, str]]:
    """What keeps ``experiment`` from launching, as ``(key, message)`` pairs (empty: none).

    An experiment needs a plan: a hypothesis, a primary metric, at least one guardrail, a
    randomisation unit and a planned duration; a control arm it names; arms whose weights
    add up to 100 (percent of traffic), so the split a reader sees is the split served."""
    problems: list[tuple[str, str]] = []
    for key in PLAN_FIELDS:
        value = getattr(experiment, key)
        if value is None or value == [] or (isinstance(value, str) and not value.strip()):
            problems.append((key, "required by the experiment plan"))
    names = [v.name for v in experiment.variants]
    if len(set(names)) != len(names):
        problems.append(("variants", f"arm names repeat: {names}"))
    if experiment.control not in names:
        problems.append(("control", f"names no arm (arms: {names})"))
    if len(names) < 2:
        problems.append(("variants", "an experiment needs a control and at least one treatment"))
    total = sum(v.weight for v in experiment.variants)
    if abs(total - TRAFFIC_PERCENT) > 1e-9:
        problems.append(("variants", f"arm weights add up to {total:g}, not 100 (percent)"))
    metrics = [g.metric for g in experiment.guardrails]
    if len(set(metrics)) != len(metrics):
        problems.append(("guardrails", f"a metric is guarded twice: {metrics}"))
    return problems


def check_experiments(experiments: Sequence[ExperimentConfig]) -> list[tuple[str, str]]:
    """:func:`check_experiment_plan` over a config's list, keys prefixed
    ``experiments.<i>.`` as in the YAML; experiment ids must be unique."""
    out: list[tuple[str, str]] = []
    ids = [e.id for e in experiments]
    for i, exp in enumerate(experiments):
        if ids.count(exp.id) > 1:
            out.append((f"experiments.{i}.id", f"{exp.id!r} is used by more than one experiment"))
        out += [(f"experiments.{i}.{key}", msg) for key, msg in check_experiment_plan(exp)]
    return out
