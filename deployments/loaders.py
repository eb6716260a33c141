"""Loading what replicas serve from: tenant tables (artifacts: :mod:`serving.loaders`).

Everything here constructs library objects (``core``, ``retrieval``, ``ranking``) from
storage; nothing decides anything. Missing tenant data returns ``None`` so the library's
fail-closed paths (policy unavailable, source unavailable) take over, instead of a replica
that cannot start.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

from core.catalogue import Catalogue
from core.config import PlatformConfig, load_platform_config
from core.eventlog import EventLog
from core.schema import USER_SCHEMA
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


def load_catalogues(ctx: ServingContext, tenants: Iterable[str],
                    given: Mapping[str, Catalogue | None] | None = None) -> dict[str, Catalogue | None]:  # fmt: skip
    """Tenant → catalogue for ``tenants``: those in ``given`` (already loaded by the replica:
    the same object, shared), the others loaded here (:func:`load_catalogue`)."""
    given = given or {}
    return {t: given[t] if t in given else load_catalogue(ctx, t) for t in tenants}


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
