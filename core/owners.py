"""Who answers for each kind of thing that changes production, and when that was last reviewed.

``configs/owners.yaml`` (:class:`OwnersConfig`; ``$RECSYS_OWNERS`` names another file) holds one
entry per kind, optionally per tenant: team, primary owner, escalation channel, runbook, and
``last_reviewed`` (the date someone last confirmed the entry is still true). It covers

* every registry artifact kind (:data:`core.manifest.ARTIFACT_KINDS`): the registry stamps the
  entry on a version published without an owner, so jobs that name none keep working, and
  refuses to publish when there is neither (:meth:`core.registry.Registry.publish`);
* the kinds kept as files in this repository (:data:`FILE_KINDS`: experiments in the platform
  config, alert rules, dashboards, runbooks), reviewed through version control, whose owners
  ``recsys owners`` lists from here beside the registry's.

Invariants: lookup is most specific first (``kind`` + ``tenant``, then ``kind`` + ``"*"``);
an entry is stale when ``last_reviewed`` is older than ``stale_after_days`` (or missing);
every kind has an entry (:meth:`OwnersConfig.missing_kinds`, checked by the config test).
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.manifest import ARTIFACT_KINDS, Owner

FILE_KINDS: dict[str, str] = {
    "experiment": "configs/platform.yaml",
    "alert_rules": "configs/alerts",
    "dashboard": "configs/dashboards",
    "runbook": "docs/runbooks",
}
"""Kinds that live as files in this repository (reviewed by version control) → where."""
ALL_KINDS: tuple[str, ...] = (*ARTIFACT_KINDS, *(k for k in FILE_KINDS if k not in ARTIFACT_KINDS))

OWNERS_ENV = "RECSYS_OWNERS"
DEFAULT_OWNERS_FILE = Path(__file__).resolve().parents[1] / "configs" / "owners.yaml"


class OwnerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    tenant: str = "*"
    team: str = Field(min_length=1)
    primary: str = Field(min_length=1)
    escalation: str = Field(min_length=1)
    runbook: str = Field(min_length=1)
    last_reviewed: date

    def owner(self) -> Owner:
        return Owner(team=self.team, primary=self.primary, escalation=self.escalation,
                     runbook=self.runbook, last_reviewed=self.last_reviewed)  # fmt: skip


class OwnersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stale_after_days: int = Field(180, ge=1)
    owners: list[OwnerEntry] = Field(default_factory=list)

    def entry(self, kind: str, tenant: str) -> OwnerEntry | None:
        exact = [e for e in self.owners if e.kind == kind and e.tenant == tenant]
        wildcard = [e for e in self.owners if e.kind == kind and e.tenant == "*"]
        return (exact or wildcard or [None])[0]

    def owner_for(self, kind: str, tenant: str) -> Owner | None:
        entry = self.entry(kind, tenant)
        return entry.owner() if entry is not None else None

    def missing_kinds(self) -> list[str]:
        have = {e.kind for e in self.owners if e.tenant == "*"}
        return [k for k in ALL_KINDS if k not in have]

    def unknown_kinds(self) -> list[str]:
        return sorted({e.kind for e in self.owners} - set(ALL_KINDS))


def is_stale(owner: Owner | None, stale_after_days: int, today: date | None = None) -> bool:
    """No owner, no review date, or a review older than ``stale_after_days``."""
    if owner is None or owner.last_reviewed is None:
        return True
    return ((today or date.today()) - owner.last_reviewed).days > stale_after_days


def complete_owner(owner: Owner, default: Owner | None) -> Owner:
    """``owner`` with its ``last_reviewed`` taken from the owners file when the file's entry
    names the same team and primary (that ownership was reviewed there); else as given."""
    if owner.last_reviewed is not None or default is None:
        return owner
    if (default.team, default.primary) == (owner.team, owner.primary):
        return owner.model_copy(update={"last_reviewed": default.last_reviewed})
    return owner


def owner_problems(owner: Owner | None) -> list[str]:
    """Why ``owner`` cannot own a published artifact (empty: it can)."""
    if owner is None:
        return ["no owner"]
    return [f"owner.{f} is empty" for f in ("team", "primary", "escalation", "runbook")
            if not str(getattr(owner, f)).strip()]  # fmt: skip


def load_owners(path: str | Path | None = None) -> OwnersConfig:
    """The owners file (``path``, ``$RECSYS_OWNERS``, else ``configs/owners.yaml``); an empty
    config when the default file does not exist (an installed package without configs/)."""
    explicit = path or os.environ.get(OWNERS_ENV)
    p = Path(explicit or DEFAULT_OWNERS_FILE)
    if not p.is_file():
        if explicit:
            raise ValueError(f"{p}: no such owners file")
        return OwnersConfig()
    try:
        return OwnersConfig.model_validate(yaml.safe_load(p.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"{p}: {exc}") from None


# ---------------------------------------------------------------------------------- listing


class OwnershipRow(BaseModel):
    """One line of ``recsys owners``: a kind (for a tenant, or ``*``), what it covers, who
    owns it, and whether that is stale. ``source``: ``registry`` (the owner in the manifest of
    the version named by ``subject``), ``owners.yaml`` (a kind with nothing published, or one
    kept as files), or ``none``."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    tenant: str
    subject: str
    source: str
    owner: Owner | None
    stale: bool


def ownership_rows(registry, owners: OwnersConfig, *, experiments=(), repo_root: str | Path | None = None,
                   tenant: str | None = None, today: date | None = None) -> list[OwnershipRow]:  # fmt: skip
    """Every kind's owners: each (kind, tenant) in ``registry`` (its production version, else
    its newest), each registry kind with nothing published (the owners file's default), each
    experiment of ``experiments`` (a platform config's), and each file kind of
    :data:`FILE_KINDS` under ``repo_root``. ``tenant`` keeps that tenant's rows (and ``*``)."""
    root = Path(repo_root) if repo_root is not None else DEFAULT_OWNERS_FILE.parents[1]
    n = owners.stale_after_days

    def row(kind, ten, subject, source, owner):
        return OwnershipRow(kind=kind, tenant=ten, subject=subject, source=source, owner=owner,
                            stale=is_stale(owner, n, today))  # fmt: skip

    rows: list[OwnershipRow] = []
    published: set[str] = set()
    latest: dict[tuple[str, str], Any] = {}
    for m in registry.versions(tenant=tenant) if registry is not None else []:
        latest[(m.kind, m.tenant)] = m  # sorted by version id: the last one is the newest
    for (kind, ten), newest in sorted(latest.items()):
        production = registry.resolve(kind, ten, "production")
        m = registry.manifest(kind, ten, production) if production else newest
        subject = f"{m.version} ({'production' if production else 'newest'})"
        rows.append(row(kind, ten, subject, "registry", m.owner))
        published.add(kind)
    for kind in ARTIFACT_KINDS:
        if kind not in published and kind not in FILE_KINDS:
            owner = owners.owner_for(kind, tenant or "*")
            rows.append(row(kind, tenant or "*", "nothing published", "owners.yaml" if owner else "none", owner))
    for exp in experiments:
        if tenant is None or exp.tenant == tenant:
            owner = owners.owner_for("experiment", exp.tenant)
            state = "enabled" if exp.enabled else "disabled"
            rows.append(row("experiment", exp.tenant, f"{exp.id} ({state})", "owners.yaml" if owner else "none", owner))
    for kind, where in FILE_KINDS.items():
        if kind == "experiment" or kind in published:
            continue
        path = root / where
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
        owner = owners.owner_for(kind, "*")
        subject = f"{where}/ ({len(files)} files)" if files else f"{where} (missing)"
        rows.append(row(kind, "*", subject, "owners.yaml" if owner else "none", owner))
    return rows
