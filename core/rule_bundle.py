"""A tenant's policy rules as a registry artifact (kind ``rule_bundle``), reviewed apart from
its config.

A bundle holds what the eligibility rules read: the rule list (``rules``, in order), the
blocked items and categories and the default maturity limit. The tenant config (its
``tenant_config`` document, else ``platform.yaml``) says where its rules come from:
``policy.rule_bundle: production`` takes them from the tenant's production bundle, live;
without it (the default) the config's own ``policy`` rules serve, inline. The safe fallback
list stays in the config: it is what the rules are checked against, not a rule.

``recsys rules publish`` stores a :class:`RuleBundleDocument` as a new version (``candidate``),
its automatic checks run (:func:`training.config_review.run_bundle_checks`: schema,
references, the safe fallback list under the bundle, a replay of logged requests), it is
signed off and approved, and ``recsys rules promote`` moves ``production`` through the gate of
:mod:`core.promotion`. Ingress replicas poll the alias with the tenant config's and apply a
promoted bundle without a redeploy (:mod:`deployments.tenants`); every decision record names
the bundle in ``versions.rule_bundle`` (``inline`` when the config's own rules serve).

Invariants: a bundle names its tenant and carries an owner (publishing without one is
refused); a bundle that only makes the rules stricter (:func:`stricter_only`) is a safety
rule, an emergency kind that a change freeze lets through (it still needs its review).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from core.config import (
    DEFAULT_RULES,
    ConfigError,
    ConfigIssue,
    PlatformConfig,
    PolicyConfig,
    RuleConfig,
    StrictModel,
    load_model,
)
from core.manifest import Manifest, Owner
from core.tenant_config import (
    BOOTSTRAP,
    RULE_FIELDS,
    OwnerBlock,
    publish_file,
    stricter_only,  # noqa: F401 - the safety-rule test of a bundle, here with it
    validated_platform,
)
from core.tenant_config import effective_platform as config_platform

KIND = "rule_bundle"
FILE_NAME = "rule_bundle.yaml"
INLINE = "inline"
"""What records and ``/v1/versions`` name as the rule bundle when the config's own rules serve."""


class RuleBundleDocument(StrictModel):
    """One tenant's policy rules: what ``recsys rules publish`` takes."""

    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    owner: OwnerBlock
    description: str = ""
    rules: list[RuleConfig] = Field(default_factory=lambda: list(DEFAULT_RULES), validate_default=True)
    """Eligibility rules in order (``ranking/rules/``); every candidate must pass each."""
    blocked_items: list[str] = Field(default_factory=list)
    blocked_categories: list[str] = Field(default_factory=list)
    default_max_maturity: Literal["general", "teen", "mature"] = "teen"

    def manifest_owner(self) -> Owner:
        return Owner(**self.owner.model_dump())

    def body(self) -> dict[str, Any]:
        """What serving reads of the bundle (JSON types): the rule fields."""
        return self.model_dump(mode="json", include=set(RULE_FIELDS))


def policy_rules(policy: PolicyConfig) -> dict[str, Any]:
    """The rule fields of a policy (JSON types), as a bundle body holds them."""
    return policy.model_dump(mode="json", include=set(RULE_FIELDS))


def document_from_policy(policy: PolicyConfig, tenant: str, owner: OwnerBlock | dict) -> RuleBundleDocument:
    """The rules ``policy`` serves as a bundle document (``recsys rules export``)."""
    return RuleBundleDocument.model_validate({
        "tenant": tenant, "owner": owner if isinstance(owner, dict) else owner.model_dump(),
        **policy_rules(policy)})  # fmt: skip


def references_bundle(platform: PlatformConfig, tenant: str) -> bool:
    """Does the tenant's config take its rules from its production bundle?"""
    return platform.tenant(tenant).policy.rule_bundle == "production"


def apply_bundle(platform: PlatformConfig, tenant: str, bundle: RuleBundleDocument, source: str = "") -> PlatformConfig:
    """``platform`` with ``tenant``'s rule fields replaced by the bundle's (whether or not the
    config references it: callers decide). :class:`ConfigError` (file ``source``) when the
    result does not validate or the bundle names another tenant."""
    if bundle.tenant != tenant:
        raise ConfigError([ConfigIssue(file=source or KIND, key="tenant",
                                       message=f"the bundle is for {bundle.tenant!r}, not {tenant!r}")])  # fmt: skip
    raw = platform.model_dump(mode="json")
    entry = next((t for t in raw["tenants"] if t["id"] == tenant), None)
    if entry is None:
        raise ConfigError([ConfigIssue(file=source or KIND, key="tenant",
                                       message=f"tenant {tenant!r} is not in the platform config")])  # fmt: skip
    entry["policy"] = {**entry["policy"], **bundle.body()}
    return validated_platform(raw, source or KIND)


def load_document_file(path: str | Path) -> RuleBundleDocument:
    """Read and validate a bundle file; :class:`ConfigError` names the file and each key."""
    return load_model(path, RuleBundleDocument)


def write_document(doc: RuleBundleDocument, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(doc.model_dump(mode="json"), sort_keys=False))


def fingerprint(doc: RuleBundleDocument) -> str:
    return hashlib.sha256(json.dumps(doc.body(), sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------- registry


def publish_document(registry: Any, doc: RuleBundleDocument, *, actor: str) -> Manifest:
    """Store ``doc`` as a new ``rule_bundle`` version (alias ``candidate``); its lineage names
    the production version it was written against."""
    return publish_file(registry, KIND, doc, FILE_NAME, write_document, fingerprint(doc), actor=actor)


def load_published(registry: Any, tenant: str, version: str) -> RuleBundleDocument:
    return load_document_file(registry.local_path(KIND, tenant, version) / FILE_NAME)


def production_bundle(registry: Any, tenant: str, alias: str = "production") -> tuple[str, RuleBundleDocument] | None:
    """``(version, bundle)`` the alias points at, or None (none promoted)."""
    version = registry.resolve(KIND, tenant, alias)
    return None if version is None else (version, load_published(registry, tenant, version))


def served_rules(platform: PlatformConfig, tenant: str,
                 found: tuple[str, RuleBundleDocument] | None) -> tuple[PlatformConfig, str]:  # fmt: skip
    """``platform`` with the tenant's bundle applied when its config references one and one is
    promoted (``found``), and the bundle version it serves (:data:`INLINE` otherwise)."""
    if found is None or not references_bundle(platform, tenant):
        return platform, INLINE
    version, bundle = found
    return apply_bundle(platform, tenant, bundle, f"{KIND} {version}"), version


def effective_platform(platform: PlatformConfig, registry: Any, tenant: str,
                       alias: str = "production") -> tuple[PlatformConfig, str]:  # fmt: skip
    """:func:`core.tenant_config.effective_platform` (the ``alias`` document applied, and its
    version or ``platform.yaml``) with the tenant's ``alias`` rule bundle applied when the
    config takes its rules from one: the platform config as ``tenant`` is served."""
    served, version = config_platform(platform, registry, tenant, alias)
    if references_bundle(served, tenant):
        served, _ = served_rules(served, tenant, production_bundle(registry, tenant, alias))
    return served, version or BOOTSTRAP
