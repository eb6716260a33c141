"""The platform's one strict configuration schema and its loader.

``configs/platform.yaml`` is validated once, at load, by :class:`PlatformConfig`. Every model
forbids unknown keys, so a typo in a nested key is an error that names the dotted key path
(``tenants.0.surfaces.home.slate.max_per_categroy``) instead of a silently ignored setting.

Relative local storage paths resolve against ``$RECSYS_HOME`` when it is set (Ray jobs run in
a copy of the working directory, so the job submitter passes the real project root), else
against the current directory. Any ``pyarrow.fs`` URI (``s3://…``, ``gs://…``) is kept as is.

Length: the one strict schema of platform.yaml and its loader, by design in one file.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.components import (
    RULES,
    SLATE_STEPS,
    SOURCES,
    ComponentKinds,
    default_task_weights,
    load_plugins,
)

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------- storage


class StorageConfig(StrictModel):
    data: str = "var/data"
    """Root of the tenant data tables (``catalogue/``, ``users/``)."""
    events: str = "var/data/events"
    """Root of the partitioned event log."""
    registry: str = "var/registry"
    """Root of the artifact registry."""
    decisions: str = "var/decisions"
    """Root of the decision log."""


# ---------------------------------------------------------------------------------- components


def _component_spec(registry: ComponentKinds, base: type[BaseModel]) -> Any:
    """A config entry of one pluggable kind: validated by the model its component registered
    (:mod:`core.components`), so the union of kinds is whatever the registry holds."""

    def dispatch(value: Any, handler: Any) -> Any:
        if isinstance(value, base):
            return value
        if isinstance(value, str):  # shorthand: a kind with default settings
            value = {"kind": value}
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise PydanticCustomError("kind_missing", "an entry needs a 'kind'")
        kind = value["kind"]
        if kind not in registry:
            raise PydanticCustomError(
                "unknown_kind",
                "unknown {role} kind '{kind}'; known: {known}",
                {"role": registry.role, "kind": kind, "known": ", ".join(sorted(registry))},
            )
        model = registry.get(kind).config or base
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            # Put the kind in each error's location, as a discriminated union does: it tells
            # the reader which kind of entry the key belongs to (``sources.0.fresh.quota``).
            errors = [{**e, "loc": (kind, *e["loc"])} for e in exc.errors()]
            for e in errors:
                e.pop("url", None)
            raise ValidationError.from_exception_data(exc.title, errors) from None

    return Annotated[SerializeAsAny[base], WrapValidator(dispatch)]


def _repeated(values: Any) -> list[str]:
    """The values that occur more than once, sorted."""
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})


class SourceSpec(StrictModel):
    """What every candidate source entry has; a source kind's own model extends it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str
    quota: int = Field(100, ge=1, le=5000, description="most candidates this source returns")
    timeout_ms: float = Field(50.0, gt=0, le=10_000)
    required: bool = False
    """A required source that fails makes the request fall back; an optional one is skipped."""


class RuleSpec(StrictModel):
    """An eligibility rule entry in ``policy.rules`` (a bare name is ``{kind: name}``)."""

    kind: str


class SlateStepSpec(StrictModel):
    """A slate step entry in ``slate.steps``; a step kind's own model extends it."""

    kind: str


SourceConfig = _component_spec(SOURCES, SourceSpec)
RuleConfig = _component_spec(RULES, RuleSpec)
SlateStepConfig = _component_spec(SLATE_STEPS, SlateStepSpec)

# ---------------------------------------------------------------------------------- ranking


class RankerConfig(StrictModel):
    task_weights: dict[str, float] = Field(default_factory=default_task_weights)
    """utility = sum(weight[task] * p(task)); tasks must exist in the ranker model."""
    timeout_ms: float = Field(200.0, gt=0, le=10_000)
    max_candidates: int = Field(500, ge=1, le=5000)


DEFAULT_SLATE_STEPS = ("pinned", "frequency_cap", "exploration", "diversity")


class SlateConfig(StrictModel):
    steps: list[SlateStepConfig] = Field(
        default_factory=lambda: list(DEFAULT_SLATE_STEPS), validate_default=True
    )
    """The slate, built in this order (``ranking/slate/``): each step removes candidates,
    places items at positions, or fills the free positions; ``docs/extending.md``."""

    @model_validator(mode="after")
    def _steps_once(self) -> SlateConfig:
        dupes = _repeated(s.kind for s in self.steps)
        if dupes:
            raise ValueError(f"each slate step kind at most once, repeated: {', '.join(dupes)}")
        return self

    def step(self, kind: str) -> Any:
        """The step entry of ``kind``, or None."""
        return next((s for s in self.steps if s.kind == kind), None)


class SurfaceConfig(StrictModel):
    mode: Literal["online", "precomputed"] = "online"
    """``precomputed`` (email, push, cold-start surfaces): the surface's ``precomputed``
    sources answer first, from the production ``batch_recs`` (``training.batch_score``); the
    other sources run only when they hand over (artifact expired, user not in it), which the
    response and the decision record mark (``degraded``: ``precomputed_handover:<why>``)."""
    sources: list[SourceConfig] = Field(min_length=1)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    slate: SlateConfig = Field(default_factory=SlateConfig)

    @model_validator(mode="after")
    def _unique_source_names(self) -> SurfaceConfig:
        dupes = _repeated(s.name for s in self.sources)
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        if self.mode == "precomputed" and not any(s.kind == "precomputed" for s in self.sources):
            raise ValueError("mode precomputed needs a source of kind 'precomputed'")
        return self


# ---------------------------------------------------------------------------------- policy

DEFAULT_RULES = ("catalogue", "availability", "blocked", "hidden", "maturity", "exclude")


class PolicyConfig(StrictModel):
    rules: list[RuleConfig] = Field(
        default_factory=lambda: list(DEFAULT_RULES), validate_default=True
    )
    """Eligibility rules in order (``ranking/rules/``); every candidate must pass each."""
    blocked_items: list[str] = Field(default_factory=list)
    blocked_categories: list[str] = Field(default_factory=list)
    default_max_maturity: Literal["general", "teen", "mature"] = "teen"
    """Maturity limit for users whose own limit is unknown."""
    safe_fallback: list[str] = Field(default_factory=list)
    """Last resort when policy data cannot be read (fail closed) and the tenant has no
    production ``fallback_list`` artifact (``training.fallback_lists``: generated, validated
    against the rules, owned, with an expiry) — that list is what serving uses first."""
    rule_bundle: Literal["production"] | None = None
    """``production``: the rules (``rules``, ``blocked_items``, ``blocked_categories``,
    ``default_max_maturity``) come from the tenant's production ``rule_bundle`` artifact
    (``recsys rules``, :mod:`core.rule_bundle`), picked up live; the ones above serve until
    one is promoted. ``None`` (the default): the rules above, inline."""


# ---------------------------------------------------------------------------------- tenants

API_KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>``. Keys themselves are never stored."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class EndpointQuota(StrictModel):
    """One tenant's allowance on one endpoint, **per Ingress replica** (the replicas share
    nothing on the request path; with N replicas behind the balancer the tenant gets about N
    times these). Unset fields are unlimited. Over it the tenant is answered 429 with
    ``Retry-After`` (``deployments/quotas.py``, ``docs/api.md``)."""

    rate_per_s: float | None = Field(None, gt=0)
    """Sustained requests per second (a token bucket)."""
    burst: int | None = Field(None, ge=1)
    """Requests the bucket holds (default: one second's worth, at least 1)."""
    max_in_flight: int | None = Field(None, ge=1)
    """Requests of this tenant being answered at once on one replica."""

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> EndpointQuota:
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError("burst needs rate_per_s")
        return self


class TenantQuotas(StrictModel):
    """Per-endpoint quotas of a tenant (``tenants.N.quotas``); absent: unlimited."""

    recommend: EndpointQuota = Field(default_factory=EndpointQuota)
    events: EndpointQuota = Field(default_factory=EndpointQuota)


class TenantConfig(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str
    api_key_hashes: list[str] = Field(min_length=1)
    surfaces: dict[str, SurfaceConfig] = Field(min_length=1)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    quotas: TenantQuotas = Field(default_factory=TenantQuotas)
    api_key_scopes: dict[str, list[Literal["serve", "debug", "admin"]]] = Field(
        default_factory=dict
    )
    """Key hash → its scopes (``deployments/auth.py``); a key hash not listed has every scope."""

    @model_validator(mode="after")
    def _check_keys(self) -> TenantConfig:
        for h in self.api_key_hashes:
            if not API_KEY_HASH.match(h):
                raise ValueError("api_key_hashes entries must look like 'sha256:<64 hex digits>'")
        unknown = sorted(set(self.api_key_scopes) - set(self.api_key_hashes))
        if unknown:
            raise ValueError(f"api_key_scopes names hashes not in api_key_hashes: {unknown}")
        return self


# ---------------------------------------------------------------------------------- experiments


class VariantOverrides(StrictModel):
    ranker_version: str | None = None
    """A ranker version (need not be production) that scores this arm's requests."""
    two_tower_version: str | None = None
    """With ``ann_index_version``: the two-tower pair this arm's ``two_tower`` sources use
    (an index built by that tower; both need not be production)."""
    ann_index_version: str | None = None
    task_weights: dict[str, float] | None = None
    sources: list[SourceConfig] | None = None
    slate: SlateConfig | None = None

    @model_validator(mode="after")
    def _pair_pinned_together(self) -> VariantOverrides:
        if (self.two_tower_version is None) != (self.ann_index_version is None):
            raise ValueError("two_tower_version and ann_index_version are pinned together (a query "
                             "tower only fits the index its item tower built)")
        return self

    @property
    def two_tower_pin(self) -> tuple[str, str] | None:
        """``(two_tower, ann_index)`` pinned by the arm, or ``None``."""
        if self.two_tower_version is None or self.ann_index_version is None:
            return None
        return (self.two_tower_version, self.ann_index_version)


class VariantConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    weight: float = Field(gt=0)
    overrides: VariantOverrides = Field(default_factory=VariantOverrides)


EXPERIMENT_METRICS = ("click_rate", "like_rate", "hide_rate")
"""Per-exposure rates the analysis (``training.analyze_experiment``) measures per arm. A
click or like is good, a hide bad: "degradation" is a drop of the first two, a rise of the third."""


class GuardrailConfig(StrictModel):
    metric: Literal["click_rate", "like_rate", "hide_rate"]
    max_degradation: float = Field(gt=0, le=1)
    """The largest tolerated worsening vs control, relative to control's rate (0.05: 5%)."""


class ExperimentConfig(StrictModel):
    """An experiment and its plan. The plan fields are optional in the schema so a config
    under construction loads; :func:`core.experiments.check_experiment_plan` (run by
    ``recsys config validate`` and the review) refuses an experiment whose plan is incomplete
    or whose arms' weights do not add up to 100 (percent of traffic)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    tenant: str
    surfaces: list[str] = Field(min_length=1)
    unit: Literal["user_id"] = "user_id"
    """The randomisation unit: every request of one unit gets the same arm."""
    salt: str = Field(min_length=1)
    enabled: bool = True
    variants: list[VariantConfig] = Field(min_length=1)
    """Arms; ``weight`` is the percent of the unit's traffic (they must add up to 100)."""
    hypothesis: str | None = None
    """What the treatment should change and why, written before the launch."""
    primary_metric: Literal["click_rate", "like_rate", "hide_rate"] | None = None
    guardrails: list[GuardrailConfig] = Field(default_factory=list)
    control: str = "control"
    """The arm the others are compared against (names a variant)."""
    start: date | None = None
    planned_duration_days: int | None = Field(None, ge=1, le=90)


# ---------------------------------------------------------------------------------- root


class PlatformConfig(StrictModel):
    version: str = Field(min_length=1, description="config version, recorded in decisions")
    plugins: list[str] = Field(default_factory=list)
    """Modules (or packages) of extra components to register before validating, e.g. a
    source kind kept outside this repository: ``[acme_recs.sources]``."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tenants: list[TenantConfig] = Field(min_length=1)
    experiments: list[ExperimentConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, data: Any) -> Any:
        plugins = data.get("plugins") if isinstance(data, dict) else None
        try:
            load_plugins(plugins if isinstance(plugins, list) else ())
        except ImportError as exc:
            raise PydanticCustomError(
                "plugin_import", "plugins: cannot import {name}", {"name": str(exc)}
            ) from None
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> PlatformConfig:
        ids = [t.id for t in self.tenants]
        if len(set(ids)) != len(ids):
            raise ValueError("tenant ids must be unique")
        seen: dict[str, str] = {}
        for t in self.tenants:
            for h in t.api_key_hashes:
                if h in seen and seen[h] != t.id:
                    raise ValueError(f"an API key hash is shared by tenants {seen[h]} and {t.id}")
                seen[h] = t.id
        by_id = {t.id: t for t in self.tenants}
        for e in self.experiments:
            if e.tenant not in by_id:
                raise ValueError(f"experiment {e.id}: unknown tenant {e.tenant!r}")
            missing = [s for s in e.surfaces if s not in by_id[e.tenant].surfaces]
            if missing:
                raise ValueError(f"experiment {e.id}: unknown surfaces {missing}")
        return self

    def tenant(self, tenant_id: str) -> TenantConfig:
        for t in self.tenants:
            if t.id == tenant_id:
                return t
        raise KeyError(f"unknown tenant {tenant_id!r}")

    def tenant_for_key_hash(self, key_hash: str) -> TenantConfig | None:
        for t in self.tenants:
            if key_hash in t.api_key_hashes:
                return t
        return None

    def resolved_storage(self) -> StorageConfig:
        """Storage with relative local paths made absolute (see the module docstring)."""
        return StorageConfig(**{k: resolve_uri(v) for k, v in self.storage.model_dump().items()})

    def fingerprint(self) -> str:
        """Short content hash, so a decision record names the exact config it ran with."""
        blob = self.model_dump_json().encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------------------------- loading


def resolve_uri(uri: str) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    base = os.environ.get("RECSYS_HOME") or os.getcwd()
    return str(Path(base, uri).resolve())


class ConfigIssue(StrictModel):
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '<root>'}: {self.message}"


class ConfigError(ValueError):
    """A config file that cannot be used. ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def _key_path(loc: tuple[Any, ...]) -> str:
    # Discriminated unions add the tag (e.g. "editorial") to the location; keep it, it tells
    # the reader which kind of source the error is about.
    return ".".join(str(p) for p in loc)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        issue = ConfigIssue(file=str(path), key="", message=exc.strerror or str(exc))
        raise ConfigError([issue]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        issue = ConfigIssue(file=str(path), key="", message=f"{where}invalid YAML")
        raise ConfigError([issue]) from None


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file and validate it against ``model``, reporting every error at once."""
    data = read_yaml(path)
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not allowed here; check the spelling)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            issues.append(ConfigIssue(file=str(path), key=_key_path(err["loc"]), message=msg))
        raise ConfigError(issues) from None


DEFAULT_PLATFORM_CONFIG = "configs/platform.yaml"


def load_platform_config(path: str | Path | None = None) -> PlatformConfig:
    """Load ``configs/platform.yaml`` (or ``$RECSYS_CONFIG``, or ``path``)."""
    path = path or os.environ.get("RECSYS_CONFIG") or resolve_uri(DEFAULT_PLATFORM_CONFIG)
    return load_model(path, PlatformConfig)
