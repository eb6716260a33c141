"""The platform's one strict configuration schema and its loader.

``configs/platform.yaml`` is validated once, at load, by :class:`PlatformConfig`. Every model
forbids unknown keys, so a typo in a nested key is an error that names the dotted key path
(``tenants.0.surfaces.home.slate.max_per_categroy``) instead of a silently ignored setting.

Relative local storage paths resolve against ``$RECSYS_HOME`` when it is set (Ray jobs run in
a copy of the working directory, so the job submitter passes the real project root), else
against the current directory. Any ``pyarrow.fs`` URI (``s3://…``, ``gs://…``) is kept as is.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


# ---------------------------------------------------------------------------------- sources


class _SourceBase(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    quota: int = Field(100, ge=1, le=5000, description="most candidates this source returns")
    timeout_ms: float = Field(50.0, gt=0, le=10_000)
    required: bool = False
    """A required source that fails makes the request fall back; an optional one is skipped."""


class TwoTowerSourceConfig(_SourceBase):
    kind: Literal["two_tower"]


class ItemToItemSourceConfig(_SourceBase):
    kind: Literal["item_to_item"]
    seed_items: int = Field(5, ge=1, le=50, description="most recent history items used as seeds")
    min_cooccurrence: int = Field(2, ge=1)


class TrendingSourceConfig(_SourceBase):
    kind: Literal["trending"]
    half_life_hours: float = Field(24.0, gt=0)


class EditorialSourceConfig(_SourceBase):
    kind: Literal["editorial"]
    items: list[str] = Field(default_factory=list)


class FreshSourceConfig(_SourceBase):
    kind: Literal["fresh"]
    max_age_hours: float = Field(72.0, gt=0)


SourceConfig = Annotated[
    TwoTowerSourceConfig
    | ItemToItemSourceConfig
    | TrendingSourceConfig
    | EditorialSourceConfig
    | FreshSourceConfig,
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------------------------- ranking


class RankerConfig(StrictModel):
    task_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "like": 2.0, "hide": -4.0}
    )
    """utility = sum(weight[task] * p(task)); tasks must exist in the ranker model."""
    timeout_ms: float = Field(200.0, gt=0, le=10_000)
    max_candidates: int = Field(500, ge=1, le=5000)


class FrequencyCapConfig(StrictModel):
    max_impressions: int = Field(3, ge=1)
    window_hours: float = Field(24.0, gt=0)


class ExplorationConfig(StrictModel):
    slots: int = Field(1, ge=0, le=10)
    """Slate positions given to an item sampled from outside the top of the ranking."""
    pool: int = Field(50, ge=1, description="exploration samples from ranks k..k+pool")


class PinnedItemConfig(StrictModel):
    item_id: str
    position: int = Field(ge=0)


class SlateConfig(StrictModel):
    diversity: Literal["mmr", "none"] = "mmr"
    mmr_lambda: float = Field(0.8, ge=0.0, le=1.0)
    max_per_category: int | None = Field(3, ge=1)
    source_quotas: dict[str, int] = Field(default_factory=dict)
    """Most slate items whose best source is the named source."""
    frequency_cap: FrequencyCapConfig = Field(default_factory=FrequencyCapConfig)
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    pinned: list[PinnedItemConfig] = Field(default_factory=list)


class SurfaceConfig(StrictModel):
    sources: list[SourceConfig] = Field(min_length=1)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    slate: SlateConfig = Field(default_factory=SlateConfig)

    @model_validator(mode="after")
    def _unique_source_names(self) -> SurfaceConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------------------------------- policy

RULES = ("catalogue", "availability", "blocked", "hidden", "maturity", "exclude")


class PolicyConfig(StrictModel):
    rules: list[Literal["catalogue", "availability", "blocked", "hidden", "maturity", "exclude"]] = (
        Field(default_factory=lambda: list(RULES))
    )
    blocked_items: list[str] = Field(default_factory=list)
    blocked_categories: list[str] = Field(default_factory=list)
    default_max_maturity: Literal["general", "teen", "mature"] = "teen"
    """Maturity limit for users whose own limit is unknown."""
    safe_fallback: list[str] = Field(default_factory=list)
    """Owned, reviewed item list served when policy data cannot be read (fail closed)."""


# ---------------------------------------------------------------------------------- tenants

API_KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>``. Keys themselves are never stored."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class TenantConfig(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str
    api_key_hashes: list[str] = Field(min_length=1)
    surfaces: dict[str, SurfaceConfig] = Field(min_length=1)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @model_validator(mode="after")
    def _check_keys(self) -> TenantConfig:
        for h in self.api_key_hashes:
            if not API_KEY_HASH.match(h):
                raise ValueError("api_key_hashes entries must look like 'sha256:<64 hex digits>'")
        return self


# ---------------------------------------------------------------------------------- experiments


class VariantOverrides(StrictModel):
    ranker_version: str | None = None
    task_weights: dict[str, float] | None = None
    sources: list[SourceConfig] | None = None
    slate: SlateConfig | None = None


class VariantConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    weight: float = Field(gt=0)
    overrides: VariantOverrides = Field(default_factory=VariantOverrides)


class ExperimentConfig(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    tenant: str
    surfaces: list[str] = Field(min_length=1)
    unit: Literal["user_id"] = "user_id"
    salt: str = Field(min_length=1)
    enabled: bool = True
    variants: list[VariantConfig] = Field(min_length=1)


# ---------------------------------------------------------------------------------- root


class PlatformConfig(StrictModel):
    version: str = Field(min_length=1, description="config version, recorded in decisions")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tenants: list[TenantConfig] = Field(min_length=1)
    experiments: list[ExperimentConfig] = Field(default_factory=list)

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
