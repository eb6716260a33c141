"""Kill switches: turn one candidate source, ranker or experiment of a tenant off, live.

A kill switch is an emergency change, not a launch: it takes effect without review and
through a change freeze (like a rollback), but every flip is audited (the registry's audit
log: action ``kill_switch``, ``item`` ``<target>:<name>``, ``decision`` ``off``/``on``, the
reason) and shows in ``GET /v1/versions`` and in each decision record it touches
(``degraded``: ``kill_switch:<target>:<name>``).

State lives beside the tenant's artifacts in the registry::

    <registry>/<tenant>/_kill_switches.json     KillSwitchState, replaced atomically

and Ingress replicas pick it up on the same poll that picks up a promoted tenant config
(``deployments/tenants.py``). What "off" means:

* ``source NAME``: the source named NAME leaves every surface and experiment arm of the
  tenant (a surface left with no source is refused when the switch is set);
* ``ranker NAME``: requests served by that ranker (``default``: the production ranker of
  arms that pin none; a version an arm pins; ``all``) are ordered by the fallback scorer
  (retrieval score, then popularity), as when the ranker is down;
* ``experiment NAME``: the experiment is disabled; every user gets the default arm.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.config import PlatformConfig

Target = Literal["source", "ranker", "experiment"]
TARGETS: tuple[str, ...] = Target.__args__
ALL_RANKERS = "all"
DEFAULT_RANKER = "default"
"""Ranker switch names: ``all``; ``default`` (the production ranker, for every request whose
arm pins no version); or a version an experiment arm pins."""
AUDIT_KIND = "tenant_config"
"""The audit records of kill switches are filed under the tenant config they override."""


class KillSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Target
    name: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    actor: str
    at: datetime

    @property
    def label(self) -> str:
        return f"{self.target}:{self.name}"


class KillSwitchState(BaseModel):
    """The switches that are off now; ``revision`` grows with every flip (the poll key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    revision: int = 0
    off: tuple[KillSwitch, ...] = ()

    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.off)


class KillSwitchError(ValueError):
    """A switch that cannot be set as asked (unknown target name, last source of a surface)."""


def _path(registry: Any, tenant: str) -> str:
    registry._kind_dir(AUDIT_KIND, tenant)  # checks the tenant name
    return registry.store.path(tenant, "_kill_switches.json")


def read_state(registry: Any, tenant: str) -> KillSwitchState:
    try:
        return KillSwitchState.model_validate(registry.store.read_json(_path(registry, tenant)))
    except FileNotFoundError:
        return KillSwitchState(tenant=tenant)


def known_names(platform: PlatformConfig, tenant: str, target: str) -> set[str]:
    """Names a switch of ``target`` can name in ``platform`` as ``tenant`` is served."""
    t = platform.tenant(tenant)
    if target == "source":
        names = {s.name for surf in t.surfaces.values() for s in surf.sources}
        for e in platform.experiments:
            if e.tenant == tenant:
                names |= {s.name for v in e.variants for s in (v.overrides.sources or [])}
        return names
    if target == "experiment":
        return {e.id for e in platform.experiments if e.tenant == tenant}
    pinned = {v.overrides.ranker_version for e in platform.experiments if e.tenant == tenant
              for v in e.variants if v.overrides.ranker_version}  # fmt: skip
    return {ALL_RANKERS, DEFAULT_RANKER} | pinned


def set_switch(registry: Any, platform: PlatformConfig, tenant: str, target: str, name: str,
               state: Literal["off", "on"], *, reason: str, actor: str) -> KillSwitchState:  # fmt: skip
    """Flip one switch (``platform``: the tenant's config as served, to check the name and that
    the result still serves) and audit it. Setting a switch to the state it has is a no-op."""
    if target not in TARGETS:
        raise KillSwitchError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if not reason.strip():
        raise KillSwitchError("a kill switch needs --reason")
    with registry.store.local_lock(registry.store.path(tenant), ".kill_switches.lock"):
        current = read_state(registry, tenant)
        rest = tuple(s for s in current.off if (s.target, s.name) != (target, name))
        if state == "off":
            known = known_names(platform, tenant, target)
            if name not in known:
                raise KillSwitchError(f"tenant {tenant!r} has no {target} {name!r}; known: "
                                      f"{', '.join(sorted(known)) or 'none'}")  # fmt: skip
            if len(rest) != len(current.off):
                return current
            switch = KillSwitch(target=target, name=name, reason=reason, actor=actor, at=datetime.now(UTC))
            new = KillSwitchState(tenant=tenant, revision=current.revision + 1, off=(*rest, switch))
            apply_switches(platform, tenant, new)  # refuses a surface left without sources
        else:
            if len(rest) == len(current.off):
                return current
            new = KillSwitchState(tenant=tenant, revision=current.revision + 1, off=rest)
        registry.store.write_atomic(_path(registry, tenant), new.model_dump_json(indent=2).encode())
        registry._audit("kill_switch", AUDIT_KIND, tenant, actor=actor, reason=reason,
                        decision=state, item=f"{target}:{name}")  # fmt: skip
    return new


def apply_switches(platform: PlatformConfig, tenant: str, state: KillSwitchState) -> PlatformConfig:
    """``platform`` with the tenant's killed sources removed and killed experiments disabled
    (rankers are applied by the assembler: :func:`killed_rankers`)."""
    sources = {s.name for s in state.off if s.target == "source"}
    experiments = {s.name for s in state.off if s.target == "experiment"}
    if not sources and not experiments:
        return platform
    raw = platform.model_dump(mode="json")
    for t in raw["tenants"]:
        if t["id"] != tenant:
            continue
        for surface, cfg in t["surfaces"].items():
            cfg["sources"] = [s for s in cfg["sources"] if s["name"] not in sources]
            if not cfg["sources"]:
                raise KillSwitchError(f"surface {surface!r} of {tenant!r} would have no source left")
    for e in raw["experiments"]:
        if e["tenant"] != tenant:
            continue
        if e["id"] in experiments:
            e["enabled"] = False
        for v in e["variants"]:
            srcs = (v.get("overrides") or {}).get("sources")
            if srcs is not None:
                v["overrides"]["sources"] = [s for s in srcs if s["name"] not in sources] or None
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise KillSwitchError(f"{tenant!r} cannot serve with {', '.join(state.labels())} off: {msg}") from None


def killed_rankers(state: KillSwitchState) -> set[str]:
    return {s.name for s in state.off if s.target == "ranker"}
