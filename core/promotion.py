"""The promotion gate: what a version needs before ``production``, and who may break glass.

A version may be promoted only when its launch-review records (:class:`core.manifest.ReviewRecord`,
stored beside its manifest) show

* an ``approve`` decision, not followed by a ``reject``;
* that the approval was given on automatic checks that all passed, and that cover every
  automatic item of the kind's checklist (``offline_metrics``, ``feature_compatibility``...);
* a ``sign_off`` by a named actor for every human item of the checklist (``privacy_review``,
  ``rollback_plan``, ``oncall_notified``...);

and no change freeze covers the kind and tenant. A **break-glass** promote skips the review
and the freeze; only actors listed under an emergency role may do it, with a reason, and the
registry flags it in the audit log and on the alias. Rollback is never gated.

The policy is ``configs/promotion.yaml`` (:class:`PromotionPolicy`; ``$RECSYS_PROMOTION_POLICY``
names another file). Without a file, the defaults below apply: the gate is never off.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.manifest import ARTIFACT_KINDS, ReviewRecord

ChecklistItem = Literal[
    "offline_metrics",
    "segment_metrics",
    "feature_compatibility",
    "latency_budget",
    "privacy_review",
    "safety_guardrails",
    "experiment_plan",
    "rollback_plan",
    "dashboards",
    "oncall_notified",
]
CHECKLIST_ITEMS: tuple[str, ...] = ChecklistItem.__args__
"""The operating model's launch checklist, in the order the review prints it."""

_AUTOMATIC: tuple[str, ...] = ("offline_metrics", "feature_compatibility")
"""The items an automatic check covers today (``training/review.py``)."""

POLICY_ENV = "RECSYS_PROMOTION_POLICY"
DEFAULT_POLICY_FILE = Path(__file__).resolve().parents[1] / "configs" / "promotion.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KindChecklist(_Strict):
    """The launch checklist of one artifact kind.

    ``automatic``: items whose automatic checks must have run and passed (each check names its
    item). ``sign_offs``: items a reviewer records by name (``recsys review --sign-off ITEM``).
    """

    automatic: tuple[ChecklistItem, ...] = _AUTOMATIC
    sign_offs: tuple[ChecklistItem, ...] = tuple(i for i in CHECKLIST_ITEMS if i not in _AUTOMATIC)
    """By default every checklist item without an automatic check."""

    @model_validator(mode="after")
    def _each_item_once(self) -> KindChecklist:
        both = set(self.automatic) & set(self.sign_offs)
        if both:
            raise ValueError(f"items both automatic and signed off: {sorted(both)}")
        return self


class FreezeWindow(_Strict):
    """A change freeze: promotions of ``kinds`` for ``tenants`` (empty: all) are refused from
    ``start`` to ``end`` (UTC), except break-glass. Rollbacks always go through."""

    name: str
    start: datetime
    end: datetime
    tenants: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    reason: str = ""

    @model_validator(mode="after")
    def _valid(self) -> FreezeWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("freeze start and end need a time zone (e.g. 2026-12-20T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("freeze end must be after its start")
        unknown = set(self.kinds) - set(ARTIFACT_KINDS)
        if unknown:
            raise ValueError(f"unknown artifact kinds {sorted(unknown)}")
        return self

    def covers(self, kind: str, tenant: str, now: datetime) -> bool:
        return (
            self.start <= now < self.end
            and (not self.kinds or kind in self.kinds)
            and (not self.tenants or tenant in self.tenants)
        )


class PromotionPolicy(_Strict):
    """Promotion rules for the whole registry (``configs/promotion.yaml``)."""

    default: KindChecklist = Field(default_factory=KindChecklist)
    """The checklist of every kind not named in ``kinds``."""
    kinds: dict[str, KindChecklist] = Field(default_factory=dict)
    """Per-kind checklists that replace ``default``."""
    emergency_roles: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Role -> actors who may break glass (promote without review, during a freeze)."""
    freezes: tuple[FreezeWindow, ...] = ()

    @model_validator(mode="after")
    def _known_kinds(self) -> PromotionPolicy:
        unknown = set(self.kinds) - set(ARTIFACT_KINDS)
        if unknown:
            raise ValueError(f"unknown artifact kinds {sorted(unknown)}")
        return self

    def checklist(self, kind: str) -> KindChecklist:
        return self.kinds.get(kind, self.default)

    def emergency_role(self, actor: str) -> str | None:
        """The first emergency role that lists ``actor``, or None."""
        return next((role for role, actors in self.emergency_roles.items() if actor in actors), None)

    def freeze_at(self, kind: str, tenant: str, now: datetime | None = None) -> FreezeWindow | None:
        """The freeze window covering ``kind``/``tenant`` at ``now`` (default: now), or None."""
        now = now or datetime.now(UTC)
        return next((f for f in self.freezes if f.covers(kind, tenant, now)), None)


def load_promotion_policy(path: str | os.PathLike | None = None) -> PromotionPolicy:
    """``path``, else ``$RECSYS_PROMOTION_POLICY``, else ``configs/promotion.yaml`` of this
    checkout; the built-in defaults when that default file is absent. A named file that is
    missing or invalid is an error (ValueError naming the file)."""
    named = path or os.environ.get(POLICY_ENV)
    file = Path(named) if named else DEFAULT_POLICY_FILE
    if not file.exists():
        if named:
            raise ValueError(f"promotion policy {file} does not exist")
        return PromotionPolicy()
    try:
        return PromotionPolicy.model_validate(yaml.safe_load(file.read_text()) or {})
    except ValidationError as exc:
        issues = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid promotion policy {file}: {issues}") from None


def gate_problems(reviews: list[ReviewRecord], checklist: KindChecklist) -> list[str]:
    """Why the reviews do not allow promotion: one short phrase per missing check or sign-off;
    empty when the version may be promoted. ``reviews`` oldest first."""
    decisions = [r for r in reviews if r.decision in ("approve", "reject")]
    problems = []
    if not decisions:
        problems.append("no recorded approval")
    elif decisions[-1].decision == "reject":
        last = decisions[-1]
        problems.append(f"rejected by {last.actor}" + (f" ({last.comment})" if last.comment else ""))
    else:
        checks = decisions[-1].checks
        for name, result in checks.items():
            if not (isinstance(result, dict) and result.get("ok") is True):
                problems.append(f"automatic check {name} failed")
        covered = {r.get("item") for r in checks.values() if isinstance(r, dict)}
        for item in checklist.automatic:
            if item not in covered:
                problems.append(f"automatic check for {item} not run")
    signed = {r.item for r in reviews if r.decision == "sign_off"}
    missing = [item for item in checklist.sign_offs if item not in signed]
    if missing:
        problems.append(f"sign-off missing: {', '.join(missing)}")
    return problems
