"""A tenant's stages as served: the bootstrap config, its promoted ``tenant_config`` document,
its promoted ``rule_bundle`` (when the config takes its rules from one) and its kill switches,
assembled by :func:`serving.assembly.build_tenant_stages`.

Serve replicas (``deployments/tenants.py``) call :func:`build_served_stages` whenever the
registry shows a new production document or a flipped kill switch, and swap the pipeline's
stages in one assignment; the config review replays logged requests through the same
function (``training/config_review.py``). The record of every request names the document
version (``versions.tenant_config``; ``platform.yaml`` for the bootstrap) and the rule bundle
version (``versions.rule_bundle``; ``inline`` when the config's own rules serve) and carries
each kill switch in ``degraded`` (``kill_switch:<target>:<name>``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from core.config import PlatformConfig
from core.kill_switches import (
    ALL_RANKERS,
    DEFAULT_RANKER,
    KillSwitchState,
    apply_switches,
    killed_rankers,
)
from core.rule_bundle import RuleBundleDocument, served_rules
from core.tenant_config import BOOTSTRAP, TenantConfigDocument, apply_document
from serving.assembly import TenantData, TenantModels, build_tenant_stages
from serving.stages import TenantStages


def served_platform(base: PlatformConfig, tenant: str, document: TenantConfigDocument | None,
                    switches: KillSwitchState | None = None, version: str = "",
                    bundle: tuple[str, RuleBundleDocument] | None = None) -> PlatformConfig:  # fmt: skip
    """``base`` with the tenant's document applied, then its rule bundle ``(version, bundle)``
    (when the config references one), then its kill switches."""
    return served_platform_and_rules(base, tenant, document, switches, version, bundle)[0]


def served_platform_and_rules(base: PlatformConfig, tenant: str, document: TenantConfigDocument | None,
                              switches: KillSwitchState | None = None, version: str = "",
                              bundle: tuple[str, RuleBundleDocument] | None = None,
                              ) -> tuple[PlatformConfig, str]:  # fmt: skip
    """:func:`served_platform` and the rule bundle version it serves (:data:`INLINE`: none)."""
    platform = apply_document(base, document, version) if document is not None else base
    platform, rules = served_rules(platform, tenant, bundle)
    return (apply_switches(platform, tenant, switches) if switches is not None else platform), rules


def build_served_stages(
    base: PlatformConfig,
    tenant: str,
    data: TenantData,
    models: TenantModels | None = None,
    *,
    document: TenantConfigDocument | None = None,
    version: str = BOOTSTRAP,
    switches: KillSwitchState | None = None,
    bundle: tuple[str, RuleBundleDocument] | None = None,
    **kwargs: Any,
) -> TenantStages:
    """The tenant's stages under ``document`` (None: the bootstrap) and ``bundle`` (the
    tenant's production rule bundle ``(version, document)``, applied when the config
    references it) with ``switches`` applied. ``kwargs`` go to :func:`build_tenant_stages`
    (``remote``, ``faults``)."""
    platform, rules = served_platform_and_rules(base, tenant, document, switches, version, bundle)
    stages = build_tenant_stages(platform, tenant, data, models or TenantModels(), **kwargs)
    killed = killed_rankers(switches) if switches is not None else set()
    plans = stages.plans
    if killed:
        pinned = {v.overrides.ranker_version for e in stages.experiments for v in e.variants}
        pinned.discard(None)

        def off(version: str | None) -> bool:
            if ALL_RANKERS in killed or (version is not None and version in killed):
                return True
            return DEFAULT_RANKER in killed and version not in pinned

        plans = {key: replace(p, ranker=None) if off(p.ranker_version) else p for key, p in plans.items()}
    return replace(
        stages,
        plans=plans,
        versions={**stages.versions, "tenant_config": version, "rule_bundle": rules},
        degraded=tuple(f"kill_switch:{label}" for label in (switches.labels() if switches else ())),
    )
