"""A tenant's serving configuration as a registry artifact (kind ``tenant_config``).

``configs/platform.yaml`` is the embedded default and the bootstrap: it names the tenants,
their API keys and a first configuration of each. A tenant's surfaces (source mix, ranker
weights, slate steps), its policy rules and its experiments can then be changed as reviewed
artifacts: ``recsys config publish`` stores a :class:`TenantConfigDocument` as a new
``tenant_config`` version (a candidate), the launch review records its automatic checks and
sign-offs, and ``recsys config promote`` moves ``production`` (the review gate of
:mod:`core.promotion`). Serving applies the production document over the bootstrap
(:func:`apply_document`); a tenant without one is served from ``platform.yaml`` as it is.

Invariants:

* A document is one YAML file, ``tenant_config.yaml``, in its version directory; it carries an
  ``owner`` block (publishing without one is refused) and is validated twice: on its own
  schema, and merged into the platform config (experiments must name the tenant's surfaces…).
* What a document does not hold (tenant id, display name, API key hashes, storage, plugins)
  stays the platform config's: keys are not configuration that a review can change.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from core.config import (
    ConfigError,
    ConfigIssue,
    ExperimentConfig,
    PlatformConfig,
    PolicyConfig,
    StrictModel,
    SurfaceConfig,
    load_model,
)
from core.manifest import Lineage, Manifest, Owner, code_version

KIND = "tenant_config"
FILE_NAME = "tenant_config.yaml"
BOOTSTRAP = "platform.yaml"
"""What records and ``/v1/versions`` name as the tenant config when none is promoted."""


class OwnerBlock(StrictModel):
    """The manifest's :class:`core.manifest.Owner`, strict (every field non-empty)."""

    team: str = Field(min_length=1)
    primary: str = Field(min_length=1)
    escalation: str = Field(min_length=1)
    runbook: str = Field(min_length=1)


class TenantConfigDocument(StrictModel):
    """One tenant's reviewed configuration: what ``recsys config publish`` takes.

    ``experiments`` may omit ``tenant`` (it is this document's); an experiment that names
    another tenant is an error.
    """

    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    owner: OwnerBlock
    description: str = ""
    surfaces: dict[str, SurfaceConfig] = Field(min_length=1)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    experiments: list[ExperimentConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _experiments_of_this_tenant(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("experiments"), list):
            tenant = data.get("tenant")
            data = {**data, "experiments": [
                {"tenant": tenant, **e} if isinstance(e, dict) and "tenant" not in e else e
                for e in data["experiments"]
            ]}  # fmt: skip
        return data

    @model_validator(mode="after")
    def _own_experiments(self) -> TenantConfigDocument:
        other = [e.id for e in self.experiments if e.tenant != self.tenant]
        if other:
            raise ValueError(f"experiments {other} name another tenant than {self.tenant!r}")
        return self

    def manifest_owner(self) -> Owner:
        return Owner(**self.owner.model_dump())

    def body(self) -> dict[str, Any]:
        """What serving reads of the document (JSON types): surfaces, policy, experiments."""
        return self.model_dump(mode="json", include={"surfaces", "policy", "experiments"})


def document_from_platform(platform: PlatformConfig, tenant: str, owner: OwnerBlock | dict) -> TenantConfigDocument:
    """The bootstrap configuration of ``tenant`` as a document (``recsys config export``)."""
    t = platform.tenant(tenant)
    return TenantConfigDocument(
        tenant=tenant,
        owner=owner if isinstance(owner, OwnerBlock) else OwnerBlock.model_validate(owner),
        surfaces=t.surfaces,
        policy=t.policy,
        experiments=[e for e in platform.experiments if e.tenant == tenant],
    )


def apply_document(platform: PlatformConfig, doc: TenantConfigDocument, source: str = "") -> PlatformConfig:
    """``platform`` with ``doc.tenant``'s surfaces, policy and experiments replaced by the
    document's. :class:`ConfigError` (file ``source``) when the merge does not validate, or
    the tenant is not in the platform config (onboarding adds it there first: its keys)."""
    raw = platform.model_dump(mode="json")
    tenants = [t for t in raw["tenants"] if t["id"] == doc.tenant]
    if not tenants:
        raise ConfigError([ConfigIssue(file=source or KIND, key="tenant", message=(
            f"tenant {doc.tenant!r} is not in the platform config: onboard it there first "
            "(id, display_name, api_key_hashes)"))])  # fmt: skip
    body = doc.body()
    tenants[0]["surfaces"], tenants[0]["policy"] = body["surfaces"], body["policy"]
    raw["experiments"] = [e for e in raw["experiments"] if e["tenant"] != doc.tenant] + body["experiments"]
    return validated_platform(raw, source or KIND)


def validated_platform(raw: dict, source: str) -> PlatformConfig:
    """``raw`` (a platform config as JSON data) validated; :class:`ConfigError` names
    ``source`` and each key that fails."""
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([
            ConfigIssue(file=source, key=".".join(str(p) for p in e["loc"]), message=e["msg"])
            for e in exc.errors()
        ]) from None  # fmt: skip


def load_document_file(path: str | Path) -> TenantConfigDocument:
    """Read and validate a document file; :class:`ConfigError` names the file and each key."""
    return load_model(path, TenantConfigDocument)


def write_document(doc: TenantConfigDocument, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(doc.model_dump(mode="json", exclude_defaults=False),
                                         sort_keys=False))  # fmt: skip


# ---------------------------------------------------------------------------------- registry


def publish_document(registry: Any, doc: TenantConfigDocument, *, actor: str) -> Manifest:
    """Store ``doc`` as a new ``tenant_config`` version (alias ``candidate``); its lineage names
    the production version it was written against."""
    return publish_file(registry, KIND, doc, FILE_NAME, write_document, fingerprint(doc), actor=actor)


def publish_file(registry: Any, kind: str, doc: Any, file_name: str, write: Any, fingerprint: str, *,
                 actor: str) -> Manifest:  # fmt: skip
    """Store ``doc`` (a tenant's reviewed document: tenant config or rule bundle) written by
    ``write`` as ``file_name`` in a new ``kind`` version (alias ``candidate``); its lineage
    names the production version it was written against."""
    production = registry.resolve(kind, doc.tenant, "production")
    with tempfile.TemporaryDirectory(prefix=f"{kind}-") as tmp:
        write(doc, Path(tmp) / file_name)
        return registry.publish(
            kind, doc.tenant, tmp, owner=doc.manifest_owner(),
            lineage=Lineage(parents={kind: production} if production else {}, code_version=code_version()),
            config={"fingerprint": fingerprint}, description=doc.description, actor=actor,
        )  # fmt: skip


def load_published(registry: Any, tenant: str, version: str) -> TenantConfigDocument:
    path = registry.local_path(KIND, tenant, version) / FILE_NAME
    return load_document_file(path)


def production_document(registry: Any, tenant: str, alias: str = "production") -> tuple[str, TenantConfigDocument] | None:
    """``(version, document)`` the alias points at, or None (the tenant runs on the bootstrap)."""
    version = registry.resolve(KIND, tenant, alias)
    return None if version is None else (version, load_published(registry, tenant, version))


def effective_platform(platform: PlatformConfig, registry: Any, tenant: str,
                       alias: str = "production") -> tuple[PlatformConfig, str]:  # fmt: skip
    """The platform config as ``tenant`` is served: its ``alias`` document applied, and that
    version (or :data:`BOOTSTRAP`). With its rule bundle too: :func:`core.rule_bundle.effective_platform`."""
    found = production_document(registry, tenant, alias)
    if found is None:
        return platform, BOOTSTRAP
    version, doc = found
    return apply_document(platform, doc, f"{KIND} {version}"), version


def fingerprint(doc: TenantConfigDocument) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(doc.body(), sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------- diff


def _keyed(value: Any) -> Any:
    """Lists of named entries (sources, variants, experiments) become maps by name, so a diff
    says ``sources.fresh.quota`` rather than ``sources.4.quota``."""
    if isinstance(value, dict):
        return {k: _keyed(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        key = next((k for k in ("name", "id", "kind") if all(k in v for v in value)), None)
        if key is not None and len({v[key] for v in value}) == len(value):
            return {str(v[key]): _keyed(v) for v in value}
    return value


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Readable lines, one per changed key: ``~ key: old -> new``, ``+ key: new``, ``- key``."""
    a, b = _flat(_keyed(old or {})), _flat(_keyed(new))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            lines.append(f"+ {key}: {json.dumps(b[key])}")
        elif key not in b:
            lines.append(f"- {key}: {json.dumps(a[key])}")
        elif a[key] != b[key]:
            lines.append(f"~ {key}: {json.dumps(a[key])} -> {json.dumps(b[key])}")
    return lines


MATURITY_ORDER = ("general", "teen", "mature")
RULE_FIELDS = ("rules", "blocked_items", "blocked_categories", "default_max_maturity")
"""The :class:`core.config.PolicyConfig` fields that are rules (what a ``rule_bundle`` holds)."""


def stricter_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when the rule fields ``new`` differ from ``old`` only by being stricter: every old
    rule still there (more rules may be added), more blocked items or categories, a lower
    default maturity. Such a change is a safety rule: an emergency kind a freeze lets through."""
    def rules(body: dict[str, Any]) -> list[str]:
        return [json.dumps(r, sort_keys=True) for r in body.get("rules", [])]

    if not set(rules(old)) <= set(rules(new)):
        return False
    if not (set(old.get("blocked_items", [])) <= set(new.get("blocked_items", []))
            and set(old.get("blocked_categories", [])) <= set(new.get("blocked_categories", []))):  # fmt: skip
        return False
    mo, mn = old.get("default_max_maturity", "teen"), new.get("default_max_maturity", "teen")
    return MATURITY_ORDER.index(mn) <= MATURITY_ORDER.index(mo) and old != new


def safety_only(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when ``new`` differs from ``old`` only by stricter policy rules
    (:func:`stricter_only`: rules added, more blocked items or categories, a lower default
    maturity). Such a change is an emergency kind (a safety rule) that may pass a change
    freeze (it still needs its review)."""
    po, pn = old.get("policy", {}), new.get("policy", {})
    if not stricter_only({k: po[k] for k in RULE_FIELDS if k in po}, {k: pn[k] for k in RULE_FIELDS if k in pn}):
        return False
    same = {**new, "policy": {**pn, **{k: po.get(k) for k in RULE_FIELDS}}}
    return same == old


def tenant_body(platform: PlatformConfig, tenant: str) -> dict[str, Any]:
    """What a document would hold for ``tenant`` in ``platform`` (for diffs)."""
    t = platform.tenant(tenant)
    return {
        "surfaces": {k: v.model_dump(mode="json") for k, v in t.surfaces.items()},
        "policy": t.policy.model_dump(mode="json"),
        "experiments": [e.model_dump(mode="json") for e in platform.experiments if e.tenant == tenant],
    }
