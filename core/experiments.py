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
