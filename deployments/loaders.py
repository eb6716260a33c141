"""Loading what replicas serve from: tenant tables, and registry artifacts by alias.

Everything here constructs library objects (``core``, ``retrieval``, ``ranking``) from
storage; nothing decides anything. Missing tenant data returns ``None`` so the library's
fail-closed paths (policy unavailable, source unavailable) take over, instead of a replica
that cannot start.
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

from core.catalogue import Catalogue
from core.config import PlatformConfig, load_platform_config
from core.eventlog import EventLog
from core.registry import Registry
from core.schema import USER_SCHEMA
from deployments.hot_swap import Refused
from deployments.settings import AppArgs

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ServingContext:
    """Resolved configuration every deployment is constructed with (small; pickled by bind)."""

    config_path: str
    data: str
    events: str
    registry: str
    decisions: str
    alias: str

    @classmethod
    def from_args(cls, args: AppArgs) -> ServingContext:
        config = load_platform_config(args.resolve(args.platform_config))
        storage = config.storage.model_dump()
        for key, value in args.storage.model_dump().items():
            storage[key] = value or storage[key]
        return cls(
            config_path=args.resolve(args.platform_config),
            alias=args.alias,
            **{k: args.resolve(v) for k, v in storage.items()},
        )

    def platform(self) -> PlatformConfig:
        return load_platform_config(self.config_path)


def load_catalogue(ctx: ServingContext, tenant: str) -> Catalogue | None:
    try:
        return Catalogue.load(ctx.data, tenant)
    except (FileNotFoundError, ValueError, OSError) as exc:
        logger.error("tenant %s: no catalogue (%s); policy fails closed", tenant, exc)
        return None


def load_events(ctx: ServingContext, tenant: str) -> pa.Table | None:
    try:
        return EventLog(ctx.events).read(tenant)
    except (FileNotFoundError, OSError) as exc:
        logger.warning("tenant %s: cannot read the event log (%s)", tenant, exc)
        return None


def load_users(ctx: ServingContext, tenant: str) -> pa.Table | None:
    root = ctx.data.rstrip("/") + "/users"
    try:
        dataset = ds.dataset(root, format="parquet", partitioning="hive", schema=USER_SCHEMA)
        return dataset.to_table(filter=ds.field("tenant_id") == tenant)
    except (FileNotFoundError, OSError):
        return None


# ---------------------------------------------------------------------- registry artifacts


def two_tower_key(registry: Registry, tenant: str, alias: str) -> tuple[str, str] | None:
    """``(two_tower version, ann_index version)`` the alias points at, or None."""
    model = registry.resolve("two_tower", tenant, alias)
    index = registry.resolve("ann_index", tenant, alias)
    return (model, index) if model and index else None


def load_two_tower(registry: Registry, tenant: str, key: tuple[str, str], device: str = "cpu"):
    """A :class:`retrieval.sources.TwoTowerArtifacts`; :class:`Refused` for a mismatched pair
    (the index manifest or, failing that, the index's own metadata names its item tower)."""
    from retrieval.index import load_index
    from retrieval.sources import TwoTowerArtifacts, VersionMismatch
    from retrieval.two_tower import TwoTowerModel

    model_version, index_version = key
    manifest = registry.manifest("ann_index", tenant, index_version)
    built_by = manifest.config.get("item_tower_version") or manifest.lineage.parents.get("two_tower")
    if built_by and built_by != model_version:  # refuse before reading any weights
        raise Refused(
            f"ann_index {index_version} was built by item tower {built_by}, "
            f"not by two_tower {model_version}"
        )
    index = load_index(registry.local_path("ann_index", tenant, index_version))
    built_by = built_by or getattr(index, "item_tower_version", None) or "?"
    model = TwoTowerModel.load(registry.local_path("two_tower", tenant, model_version), device)
    try:
        return TwoTowerArtifacts(model, index, model_version, index_version, built_by)
    except VersionMismatch as exc:
        raise Refused(str(exc)) from exc


def load_ranker_model(registry: Registry, tenant: str, version: str, device: str = "cpu"):
    from ranking.model import MultiTaskRanker

    return MultiTaskRanker.load(registry.local_path("ranker", tenant, version), device)


def settle_replica() -> None:
    """Call at the end of a replica's constructor. One intra-op thread for torch: the models
    are small (a (500, 6)+(500, 8) ranker forward pass takes ~1.4 ms on one thread, while two
    threads on a shared 2-core node spin against the other replicas: 50-90 ms measured).
    Then everything loaded so far (catalogue, event-derived state) leaves the garbage
    collector's generations: full collections over it paused requests for 100-300 ms."""
    torch = sys.modules.get("torch")  # only where a model was loaded: never import it here
    if torch is not None:
        torch.set_num_threads(1)
    gc.collect()
    gc.freeze()
