"""Artifact manifests, launch-review records and audit records.

A manifest is written once, next to an artifact version's files, and never changed: it is the
proof of what a version is (its files and their sha256), where it came from (lineage) and who
answers for it (owner). Reviews and alias moves happen after publication, so they are separate
records (:class:`ReviewRecord`, :class:`AuditRecord`) rather than edits to the manifest.

All models forbid unknown fields so that a typo in a hand-written manifest or a newer writer's
field is an error, not silently dropped data.
"""

from __future__ import annotations

import functools
import subprocess
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ARTIFACT_KINDS: tuple[str, ...] = (
    "two_tower",
    "item_embeddings",
    "ann_index",
    "ranker",
    "fallback_list",
    "batch_recs",
    "tenant_config",
    "rule_bundle",
    "experiment",
    "alert_rules",
    "dashboard",
    "runbook",
)
"""Artifact kinds the registry accepts. ``experiment``, ``alert_rules``, ``dashboard`` and
``runbook`` live as files in this repository today (:data:`core.owners.FILE_KINDS`); they are
kinds here too so a deployment that versions them in the registry can, with the same owners."""

ALIASES: tuple[str, ...] = ("production", "candidate", "previous")
"""Well-known aliases. Other alias names are allowed (e.g. per-experiment arms)."""


class Owner(BaseModel):
    """Who answers for an artifact: team, primary owner, escalation channel, runbook link, and
    when that ownership was last reviewed (``None`` on manifests written before it existed:
    ``recsys owners`` shows those as stale). Defaults come from ``configs/owners.yaml``
    (:mod:`core.owners`)."""

    model_config = ConfigDict(extra="forbid")

    team: str
    primary: str
    escalation: str
    runbook: str
    last_reviewed: date | None = None


class Lineage(BaseModel):
    """Where an artifact came from.

    ``parents`` maps an artifact kind to the version this artifact was built from, e.g. an
    ``ann_index`` names the ``item_embeddings`` and ``two_tower`` versions it indexes; serving
    uses it to refuse a query tower that does not match the index.
    """

    model_config = ConfigDict(extra="forbid")

    dataset_version: str | None = None
    parents: dict[str, str] = Field(default_factory=dict)
    feature_schema_hash: str | None = None
    code_version: str | None = None
    data_quality: dict[str, Any] | None = None
    """The data-quality gate's verdict on the training data (``training.quality_gate``):
    ``report`` path, ``passed``, ``failed`` checks and, when trained anyway, ``override_reason``."""


class FileEntry(BaseModel):
    """One file of a version: path relative to the version directory (``/``-separated)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    bytes: int
    sha256: str


class Manifest(BaseModel):
    """The immutable description of one artifact version (``MANIFEST.json``)."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    tenant: str
    version: str
    created_at: datetime
    owner: Owner
    lineage: Lineage
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    files: list[FileEntry] = Field(default_factory=list)
    description: str = ""


class ReviewRecord(BaseModel):
    """One launch-review event on a version: an approval, a rejection, a sign-off, or a note.

    ``checks`` holds the automatic launch-review results the reviewer saw (name ->
    ``{"ok": bool, "detail": str, "item": checklist item}``); ``note`` records carry the
    automatic run, ``approve`` records the checks the approval was given on. A ``sign_off``
    records that ``actor`` has done one human item of the launch checklist (``item``, e.g.
    ``privacy_review``). Promotion reads these records (:mod:`core.promotion`).
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    tenant: str
    version: str
    at: datetime
    actor: str
    decision: Literal["approve", "reject", "sign_off", "note"]
    item: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    comment: str = ""

    @model_validator(mode="after")
    def _sign_off_names_its_item(self) -> ReviewRecord:
        if (self.decision == "sign_off") != (self.item is not None):
            raise ValueError("a sign_off names its checklist item; other decisions do not")
        return self


class AuditRecord(BaseModel):
    """One change to the registry (publish, alias move, promote, rollback, review decision).

    ``previous`` is the version the alias pointed at before the move (``None`` if unset);
    ``version`` the one after. ``break_glass`` marks a promotion that skipped the review gate
    (``role`` is the emergency role that allowed it). Review decisions have ``action``
    ``"review"``, ``decision`` approve/reject/sign_off and, for sign-offs, the ``item``.
    """

    model_config = ConfigDict(extra="forbid")

    at: datetime
    actor: str
    action: str
    kind: str
    tenant: str
    alias: str | None = None
    version: str | None = None
    previous: str | None = None
    reason: str = ""
    break_glass: bool = False
    role: str | None = None
    decision: str | None = None
    item: str | None = None


class AliasRecord(BaseModel):
    """The body of an alias file: where the alias points, and the move that put it there.

    ``break_glass`` is True when the version reached this alias through a break-glass promote
    (carried along when ``production`` and ``previous`` swap). Records written before these
    fields existed read with the defaults.
    """

    model_config = ConfigDict(extra="forbid")

    alias: str
    version: str
    at: datetime
    actor: str = ""
    reason: str = ""
    break_glass: bool = False


@functools.cache
def code_version() -> str:
    """The code version recorded in lineage: ``git describe`` of this repository if it is a
    git checkout (``-dirty`` when it has local changes), else the installed package version."""
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        described = out.stdout.strip()
        if described:
            return described
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("recsys-platform")
    except PackageNotFoundError:
        return "unknown"
