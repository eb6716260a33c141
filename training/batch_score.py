"""Batch scoring: the whole serving pipeline offline for many users; publishes ``batch_recs``.

    python -m training.batch_score --config configs/train/batch_score.yaml [--tenant T] [--smoke-test]

For every user of the tenant (the users table and everyone in the event log; or
``users_file`` / ``segments`` / ``max_users``), each surface to score (default: the tenant's
``mode: precomputed`` surfaces) gets the slate serving would give now: retrieve → rules →
rank → slate, by :mod:`serving` itself (:func:`serving.assembly.build_tenant_stages`) with the
``alias`` (production) versions of the two-tower, the index and the ranker. Users flow through
Ray Data (``map_batches`` over an actor pool, one actor per ``cpus_per_actor``, so the work
spreads over the cluster's cores and nodes); inside an actor a batch of users runs stage by
stage (:func:`serving.batch.recommend_many`: non-personal sources once, one two-tower pass,
one ranker forward pass; a degraded user answered by the pipeline itself). The driver reads
the tenant's data once (:class:`TenantSnapshot`: event log, users table, item-to-item index)
and shares it through the object store; an actor loads the models and builds each user's state
when that user's batch comes (:class:`serving.batch_stages.BatchUserStates`).

The slates (user, rank, item, score, reasons, sources; the surface's precomputed sources left
out, so a batch never reads an older batch) are published as a ``batch_recs`` version:
``recs.parquet``, and in the manifest the versions used, ``expires_at`` (creation +
``ttl_hours``), coverage, timing and the owner. The job then records the automatic checks
(coverage at least ``min_coverage``; every slate item passes the tenant's rules) and promotes
the version, which the ``precomputed`` source picks up (``retrieval/sources/precomputed.py``).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config import PlatformConfig, load_platform_config
from core.train_config import BatchScoreConfig
from training import common
from training.evaluate_pipeline import offline_platform

ACTOR = "training.batch_score"
RECS_SCHEMA = pa.schema([
    ("surface", pa.string()), ("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
    ("score", pa.float64()), ("reasons", pa.list_(pa.string())), ("sources", pa.list_(pa.string())),
    ("fallback", pa.string()), ("degraded", pa.list_(pa.string())), ("eligible", pa.bool_()),
])  # fmt: skip
"""One row per slate position. A user whose slate came back empty has one row with a null
``item_id`` (so coverage counts them). ``eligible``: the item passes the tenant's rules for
the user when re-checked after the slate was built."""


def batch_platform(platform: PlatformConfig, tenant: str, surfaces: list[str]) -> PlatformConfig:
    """The platform config as the batch runs it: ``surfaces`` online without their precomputed
    sources, every timeout raised to the offline value
    (:func:`training.evaluate_pipeline.offline_platform`: a slate must not depend on how busy the
    machine is; a micro-batch must finish within it, so keep ``batch_size`` in the hundreds)."""
    raw = platform.model_dump(mode="json")
    for t in raw["tenants"]:
        for name, surface in t["surfaces"].items():
            if t["id"] == tenant and name in surfaces:
                surface["mode"] = "online"
                surface["sources"] = [s for s in surface["sources"] if s["kind"] != "precomputed"]
    return offline_platform(PlatformConfig.model_validate(raw))


def surfaces_to_score(platform: PlatformConfig, cfg: BatchScoreConfig) -> list[str]:
    tenant = platform.tenant(cfg.tenant)
    wanted = cfg.surfaces or [s for s, c in tenant.surfaces.items() if c.mode == "precomputed"]
    unknown = [s for s in wanted if s not in tenant.surfaces]
    if unknown:
        raise ValueError(f"batch_score: tenant {cfg.tenant!r} has no surface {unknown[0]!r}; it has {', '.join(tenant.surfaces)}")
    if not wanted:
        raise ValueError(f"batch_score: tenant {cfg.tenant!r} has no `mode: precomputed` surface; name one in `surfaces:`")
    return wanted


def select_users(storage: common.JobStorage, cfg: BatchScoreConfig, events: pa.Table | None = None) -> list[str]:
    """The users to score, sorted: the users table and every user in the event log (``events``:
    the tenant's log, already read), narrowed by ``users_file``, ``segments`` and ``max_users``."""
    from training.quality_checks import users_table

    users = users_table(storage.data, storage.tenant)
    ids = set(users["user_id"].to_pylist()) if users is not None else set()
    if events is None:
        events = storage.eventlog().read(storage.tenant, columns=["user_id"])
    ids |= set(pc.unique(events["user_id"]).to_pylist())
    if cfg.users_file:
        listed = [line.strip() for line in Path(cfg.users_file).read_text().splitlines()]
        ids &= {u for u in listed if u and not u.startswith("#")}
    if cfg.segments:
        if users is None:
            raise ValueError("batch_score: segments need the users table (max_maturity); the data root has none")
        in_segment = pc.is_in(users["max_maturity"], pa.array(cfg.segments))
        ids &= set(users.filter(in_segment)["user_id"].to_pylist())
    out = sorted(ids)
    return out[: cfg.max_users] if cfg.max_users else out


@dataclass(frozen=True)
class TenantSnapshot:
    """What every scoring actor of one job reads from the tenant's data, read and built once
    (by the driver) and shared through Ray's object store: the event log (an Arrow table: the
    actors map it without a copy), the users table and the item-to-item co-occurrence index.
    Each actor used to read the log, filter it and build the index itself before its first
    micro-batch. Models stay out of it: each actor loads them from the registry."""

    events: pa.Table | None
    users: pa.Table | None
    cooccurrence: Any = None

    @classmethod
    def load(cls, platform_config: str | None, tenant: str) -> TenantSnapshot:
        """The tenant's events (its rows only, without the ``tenant_id`` column: every stage
        filters on it when present), users table and, when a surface or experiment of the
        tenant has an ``item_to_item`` source, the index as
        :func:`serving.assembly.build_tenant_stages` builds it (version included: a slate
        records it)."""
        from core.eventlog import EventLog
        from retrieval.cooccurrence import ItemToItemIndex
        from training.quality_checks import users_table

        platform = load_platform_config(platform_config)
        storage = platform.resolved_storage()
        events = EventLog(storage.events).read(tenant)
        if "tenant_id" in events.column_names:
            events = events.filter(pc.equal(events["tenant_id"], tenant)).drop_columns(["tenant_id"])
        kinds = {s.kind for surf in platform.tenant(tenant).surfaces.values() for s in surf.sources}
        kinds |= {s.kind for e in platform.experiments if e.tenant == tenant for v in e.variants
                  for s in (v.overrides.sources or [])}  # fmt: skip
        cooc = None
        if "item_to_item" in kinds:
            cooc = ItemToItemIndex.build(events, tenant_id=tenant, version=f"cooc:{events.num_rows}")
        return cls(events, users_table(storage.data, tenant), cooc)


class SlateScorer:
    """Ray Data callable class: one tenant's pipeline (models, catalogue, user state from the
    event log), built once per actor; each call scores a batch of users on every surface.
    ``shared``: the job's :class:`TenantSnapshot` (or its object reference), else the actor
    reads the tenant's data itself."""

    def __init__(self, tenant: str, platform_config: str | None, surfaces: list[str], k: int,
                 versions: dict[str, str], now: float, max_batch: int = 512, threads: int = 1,
                 shared: Any = None):  # fmt: skip
        t0, c0 = time.time(), time.process_time()
        import torch

        torch.set_num_threads(threads)  # the actor's CPUs: N actors on N cores, not N x all cores
        t1 = time.time()
        if shared is not None and not isinstance(shared, TenantSnapshot):
            import ray

            shared = ray.get(shared)
        t2 = time.time()
        self.stages, self.user_states = job_stages(tenant, platform_config, surfaces, versions, max_batch, shared)
        freeze_heap()
        t3 = time.time()
        print(f"batch_score {tenant}: actor ready {t3 - now:.1f} s after the job started (constructed at "
              f"{t0 - now:.1f} s; torch {t1 - t0:.1f} s, shared data {t2 - t1:.1f} s, stages {t3 - t2:.1f} s; "
              f"{time.process_time() - c0:.1f} s CPU)", flush=True)
        self.surfaces, self.k = surfaces, k
        self.tenant, self.now = tenant, datetime.fromtimestamp(now, UTC)
        self.scored = 0
        self.t0 = time.perf_counter()

    def __call__(self, batch: pa.Table) -> pa.Table:
        import gc

        users = batch["user_id"].to_pylist()
        # No cyclic garbage collection inside a micro-batch: it allocates enough objects to run
        # hundreds of collections, each walking everything the batch holds, and frees almost
        # everything by reference counting at its end (5-10% of a home user's CPU on ``small``).
        gc.disable()
        try:
            self.user_states.prepare(users)  # this batch's users' events, folded in one pass
            table = asyncio.run(score_users(self.stages, self.tenant, users, self.surfaces, self.k, self.now))
        finally:
            gc.enable()
        self.scored += len(users)
        rate = self.scored / max(time.perf_counter() - self.t0, 1e-9)
        print(f"batch_score {self.tenant}: this actor scored {self.scored} users ({rate:.0f}/s)", flush=True)
        return table


def freeze_heap() -> None:
    """Move everything alive now (the actor's models, catalogue, event log and user state:
    millions of objects that live as long as it does) out of the garbage collector's reach.
    A micro-batch allocates enough to trigger full collections, and each one walked that
    whole heap: about a sixth of a home micro-batch's CPU on ``small``. Objects made later are
    collected as before."""
    import gc

    gc.collect()
    gc.freeze()


def build_stages(tenant: str, platform_config: str | None, surfaces: list[str], versions: dict[str, str],
                 max_batch: int = 512, batched: bool = True, shared: TenantSnapshot | None = None):  # fmt: skip
    """The tenant's serving stages with batched model stages (:class:`serving.batching.BatchStages`)
    and user state folded per user on first use (:class:`serving.batch_stages.BatchUserStates`);
    ``batched=False``: the library's own two-tower source, ranker and user-state store, as a
    request is served one at a time (what the benchmark and the tests compare with).
    ``shared``: the tenant's data already read (:class:`TenantSnapshot`)."""
    if batched:
        return job_stages(tenant, platform_config, surfaces, versions, max_batch, shared)[0]
    return _stages(tenant, platform_config, surfaces, versions, max_batch, shared, batched=False)[0]


def job_stages(tenant: str, platform_config: str | None, surfaces: list[str], versions: dict[str, str],
               max_batch: int = 512, shared: TenantSnapshot | None = None):  # fmt: skip
    """:func:`build_stages` (batched) and its :class:`serving.batch_stages.BatchUserStates`."""
    return _stages(tenant, platform_config, surfaces, versions, max_batch, shared, batched=True)


class _JobRemote:
    """The batch path's :class:`serving.assembly.RemoteStages`: the batched model stages, and
    the user states folded per user."""

    def __init__(self, stages: Any, user_states: Any):
        self.stages, self.user_states = stages, user_states

    def source(self, cfg: Any, surface: str) -> Any:
        return self.stages.source(cfg, surface)

    def ranker(self, version: str | None) -> Any:
        return self.stages.ranker(version)

    def user_state(self) -> Any:
        return self.user_states.get


def _stages(tenant: str, platform_config: str | None, surfaces: list[str], versions: dict[str, str],
            max_batch: int, shared: TenantSnapshot | None, batched: bool):  # fmt: skip
    from core.catalogue import Catalogue
    from core.features import popularity_from_events
    from core.registry import Registry
    from serving.assembly import TenantData, TenantModels, build_tenant_stages
    from serving.batch_stages import BatchUserStates
    from serving.batching import BatchStages
    from serving.fallback_list import load_fallback_list
    from serving.loaders import load_ranker, load_two_tower

    platform = load_platform_config(platform_config)
    storage = platform.resolved_storage()
    registry = Registry(storage.registry)
    catalogue = Catalogue.load(storage.data, tenant)
    shared = shared or TenantSnapshot.load(platform_config, tenant)
    events = shared.events
    two_tower = None
    if versions.get("two_tower") and versions.get("ann_index"):
        two_tower = load_two_tower(registry, tenant, (versions["two_tower"], versions["ann_index"]))
    rankers = {}
    if versions.get("ranker"):
        loaded = {versions["two_tower"]: two_tower.model} if two_tower is not None else None
        rankers[versions["ranker"]] = load_ranker(registry, tenant, versions["ranker"], catalogue,
                                                  popularity_from_events(events), loaded_towers=loaded)  # fmt: skip
    user_states = BatchUserStates(catalogue, tenant, events, shared.users) if batched else None
    remote = _JobRemote(BatchStages(two_tower, catalogue, rankers, max_batch), user_states) if batched else None
    models = TenantModels(two_tower=two_tower, default_ranker=versions.get("ranker"), rankers={} if batched else rankers,
                          fallback_list=load_fallback_list(registry, tenant), cooccurrence=shared.cooccurrence)  # fmt: skip
    stages = build_tenant_stages(batch_platform(platform, tenant, surfaces), tenant,
                                 TenantData(catalogue, events, shared.users), models, remote=remote)  # fmt: skip
    if user_states is not None:  # live events reach these states too, as they reach the store
        stages = replace(stages, observers=(user_states.observe, *stages.observers))
    return stages, user_states


async def score_users(stages, tenant: str, users: list[str], surfaces: list[str], k: int, now: datetime) -> pa.Table:
    """Every user's slate on every surface, stage by stage over all of them
    (:func:`serving.batch.recommend_many`: shared non-personal sources, one two-tower pass and
    one ranker pass per surface), as a :data:`RECS_SCHEMA` table (:func:`recs_table`)."""
    from core.contracts import Query
    from serving.batch import recommend_many
    from serving.pipeline import RecommendationPipeline

    pipe = RecommendationPipeline(stages)
    queries = [Query(request_id=f"batch-{surface}-{user}", tenant_id=tenant, user_id=user, surface=surface, k=k, now=now)
               for surface in surfaces for user in users]  # fmt: skip
    try:
        results: list = await recommend_many(pipe, queries)
    except Exception:  # one bad query must not lose the batch: each on its own, its error recorded
        results = []
        for q in queries:
            try:
                results += await recommend_many(pipe, [q])
            except Exception as exc:
                results.append(exc)
    return recs_table(stages, queries, results)


def _removed(stages, queries: list, results: list) -> list[set[str]]:
    """Per answer, the slate items the tenant's rules remove when the finished slate is
    checked again with the user state it was built with (the safety check the job records):
    the built-in chain over every slate at once (:func:`ranking.rules.batched.kept_many`),
    the chain itself for a user or chain that cannot be judged so."""
    from core.candidates import CandidateBatch
    from ranking.rules import batched

    out: list[set[str]] = [set() for _ in results]
    rules = stages.rules
    todo = [j for j, res in enumerate(results) if not isinstance(res, BaseException) and res.slate]
    if rules is None or not todo:
        return out
    qs = [queries[j] for j in todo]
    states = [results[j].state if results[j].state is not None else stages.user_state(queries[j].user_id) for j in todo]
    shown = [CandidateBatch([s.item_id for s in results[j].slate], [()] * len(results[j].slate)) for j in todo]
    kept = batched.kept_many(rules, qs, shown, states) if batched.batchable(rules) else [None] * len(todo)
    for j, q, state, batch, ok in zip(todo, qs, states, shown, kept, strict=True):
        if ok is None:
            out[j] = {r.item_id for r in rules.apply(q, list(batch), state).removed}
        elif len(ok) != len(batch):
            out[j] = set(batch.item_ids) - set(ok.item_ids)
    return out


def recs_table(stages, queries: list, results: list) -> pa.Table:
    """The :data:`RECS_SCHEMA` rows of ``results`` (a :class:`serving.batch.BatchAnswer` or an
    exception per query), built column by column: one row per slate position, one row with a
    null item for an empty slate or an error."""
    cols: dict[str, list] = {name: [] for name in RECS_SCHEMA.names}
    for q, res, removed in zip(queries, results, _removed(stages, queries, results), strict=True):
        if isinstance(res, BaseException):
            slate, fallback, degraded = [], f"error:{type(res).__name__}", [str(res)[:200]]
        else:
            slate, fallback, degraded = res.slate, res.fallback, res.degraded
        n = len(slate) or 1
        cols["surface"] += [q.surface] * n
        cols["user_id"] += [q.user_id] * n
        cols["fallback"] += [fallback] * n
        cols["degraded"] += [degraded] * n
        if not slate:
            cols["rank"].append(0)
            for name in ("item_id", "score", "reasons", "sources", "eligible"):
                cols[name].append(None)
            continue
        cols["rank"] += [s.rank for s in slate]
        cols["item_id"] += [s.item_id for s in slate]
        cols["score"] += [s.score for s in slate]
        cols["reasons"] += [s.reasons for s in slate]
        cols["sources"] += [s.sources for s in slate]
        cols["eligible"] += [s.item_id not in removed for s in slate] if removed else [True] * n
    return pa.table(cols, schema=RECS_SCHEMA)


def production_versions(registry, tenant: str, alias: str) -> dict[str, str]:
    out = {kind: registry.resolve(kind, tenant, alias) for kind in ("two_tower", "ann_index", "ranker")}
    return {k: v for k, v in out.items() if v}


def slate_stats(table: pa.Table, users: int, surfaces: list[str], k: int) -> dict[str, Any]:
    """Coverage and outcome counts of the recs table."""
    with_item = table.filter(pc.is_valid(table["item_id"]))
    per_user = with_item.group_by(["surface", "user_id"], use_threads=False).aggregate([("item_id", "count")])
    wanted = users * len(surfaces)
    full = int(pc.sum(pc.greater_equal(per_user["item_id_count"], k)).as_py() or 0) if per_user.num_rows else 0
    firsts = table.filter(pc.equal(table["rank"], 0))
    fallbacks = Counter(f for f in firsts["fallback"].to_pylist() if f)
    degraded = Counter(d.split(":")[0] for ds in firsts["degraded"].to_pylist() for d in (ds or []))
    return {
        "users": users,
        "slates": per_user.num_rows,
        "coverage": per_user.num_rows / wanted if wanted else 0.0,
        "full_slates": full / wanted if wanted else 0.0,
        "items_per_slate": with_item.num_rows / max(per_user.num_rows, 1),
        "ineligible_items": int(pc.sum(pc.invert(with_item["eligible"])).as_py() or 0),
        "fallbacks": dict(fallbacks),
        "degraded": dict(degraded),
    }


def review_and_promote(registry, cfg: BatchScoreConfig, version: str, stats: dict[str, Any]) -> list[str]:
    """Record the automatic checks; approve and promote when they pass. Returns what failed."""
    from core.manifest import ReviewRecord

    checks = {
        "coverage": {"ok": stats["coverage"] >= cfg.min_coverage, "item": "offline_metrics",
                     "detail": f"{stats['coverage']:.4f} of users have a slate (min {cfg.min_coverage})"},
        "slates_eligible": {"ok": stats["ineligible_items"] == 0, "item": "safety_guardrails",
                            "detail": f"{stats['ineligible_items']} slate items fail the tenant's rules"},
    }  # fmt: skip
    failed = [name for name, c in checks.items() if not c["ok"]]
    now = datetime.now(UTC)
    registry.add_review(ReviewRecord(kind="batch_recs", tenant=cfg.tenant, version=version, at=now, actor=ACTOR,
                                     decision="note", checks=checks, comment="automatic checks " + ("FAILED" if failed else "passed")))  # fmt: skip
    if failed or not cfg.promote:
        return failed
    registry.add_review(ReviewRecord(kind="batch_recs", tenant=cfg.tenant, version=version, at=now, actor=ACTOR,
                                     decision="approve", checks=checks))  # fmt: skip
    registry.promote("batch_recs", cfg.tenant, version, actor=ACTOR, reason="nightly batch scoring")
    return []


def main(argv=None) -> int:
    import ray.data

    args = common.parse_args(__doc__.splitlines()[0], "configs/train/batch_score.yaml", argv)
    cfg = common.load_job_config(args, BatchScoreConfig)
    if cfg.users_file and not Path(cfg.users_file).is_file():
        raise FileNotFoundError(2, "No such file (users_file)", cfg.users_file)
    common.init_ray()
    storage = common.JobStorage(cfg)
    platform = load_platform_config(cfg.platform_config)
    surfaces = surfaces_to_score(platform, cfg)
    registry = storage.registry()
    versions = production_versions(registry, cfg.tenant, cfg.alias)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    # The tenant's data read once, here, and shared: the actors map the event log from the
    # object store instead of each reading it, and fold only their own users' state.
    snapshot = TenantSnapshot.load(cfg.platform_config, cfg.tenant)
    users = select_users(storage, cfg, snapshot.events)
    if not users:
        raise ValueError(f"batch_score: no users to score for tenant {cfg.tenant!r}")
    shared = ray.put(snapshot)
    del snapshot
    loaded = time.perf_counter() - t0
    # One block per micro-batch, and the slates collected here: the actors are the dataset's only
    # CPU work. (A repartition or write task needs a CPU too, and with one actor per core
    # (``concurrency`` = the cluster's CPUs) it never got one: the job hung.)
    ds = ray.data.from_arrow([pa.table({"user_id": users[i : i + cfg.batch_size]})
                              for i in range(0, len(users), cfg.batch_size)])  # fmt: skip
    scored = ds.map_batches(
        SlateScorer,
        fn_constructor_kwargs={"tenant": cfg.tenant, "platform_config": cfg.platform_config, "surfaces": surfaces,
                               "k": cfg.k, "versions": versions, "now": started.timestamp(),
                               "max_batch": cfg.batch_size * len(surfaces), "threads": max(1, int(cfg.cpus_per_actor)),
                               "shared": shared},
        batch_size=cfg.batch_size, batch_format="pyarrow", concurrency=cfg.concurrency, num_cpus=cfg.cpus_per_actor,
    )  # fmt: skip
    parts, arrivals = [], []  # arrivals: (seconds, user-slates) of each micro-batch's slates
    for b in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        if b.num_rows:
            parts.append(b)
            arrivals.append((time.perf_counter() - t0, int(pc.sum(pc.equal(b["rank"], 0)).as_py() or 0)))
    seconds = time.perf_counter() - t0
    # The steady rate: user-slates after the first micro-batch came back, over the time since
    # (the start-up - reading the data, starting the actors, loading the models - left out).
    steady = (sum(n for _, n in arrivals[1:]) / (seconds - arrivals[0][0])
              if len(arrivals) > 1 and seconds > arrivals[0][0] else None)  # fmt: skip
    table = (pa.concat_tables([p.select(RECS_SCHEMA.names).cast(RECS_SCHEMA) for p in parts]) if parts
             else RECS_SCHEMA.empty_table())  # fmt: skip
    table = table.sort_by([("surface", "ascending"), ("user_id", "ascending"), ("rank", "ascending")])
    stats = slate_stats(table, len(users), surfaces, cfg.k)
    expires = started + timedelta(hours=cfg.ttl_hours)
    out = storage.work / "batch_score" / f"artifact-{started:%Y%m%dT%H%M%S}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "recs.parquet")
    platform_versions = {"config": platform.version, "config_fingerprint": platform.fingerprint()}
    manifest = registry.publish(
        "batch_recs", cfg.tenant, out, owner=common.owner(cfg), lineage=common.lineage(storage, versions),
        metrics={**{k: v for k, v in stats.items() if not isinstance(v, dict)}, "seconds": seconds, "load_seconds": loaded,
                 "first_batch_seconds": arrivals[0][0] if arrivals else None, "steady_users_per_s": steady,
                 "users_per_s": len(users) * len(surfaces) / seconds, **{f"fallback:{k}": v for k, v in stats["fallbacks"].items()}},
        config={"surfaces": surfaces, "k": cfg.k, "expires_at": expires.isoformat(), "scored_at": started.isoformat(),
                "versions": {**versions, **platform_versions}, "alias": cfg.alias, "job": cfg.model_dump(mode="json")},
        description=f"batch scoring of {len(users)} users on {', '.join(surfaces)}",
    )  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    failed = review_and_promote(registry, cfg, manifest.version, stats)
    status = "production" if cfg.promote and not failed else f"candidate ({', '.join(failed) or 'promote: false'})"
    common.summary_table(f"batch_score {cfg.tenant}: batch_recs {manifest.version} → {status}", [
        ("surfaces", ", ".join(surfaces)), ("users", len(users)), ("coverage", stats["coverage"]),
        ("full slates (k items)", stats["full_slates"]), ("items per slate", stats["items_per_slate"]),
        ("ineligible items", stats["ineligible_items"]), ("fallbacks", stats["fallbacks"] or "none"),
        ("degraded", stats["degraded"] or "none"),
        *((f"version {k}", v) for k, v in versions.items()),
        ("expires at", expires.isoformat(timespec="seconds")), ("seconds", seconds), ("of which reading the data", loaded),
        ("first slates after (s)", arrivals[0][0] if arrivals else "-"), ("steady users/s", steady or "-"),
        ("users/s", len(users) * len(surfaces) / seconds), ("owner", manifest.owner.team),
    ])  # fmt: skip
    print(f"published batch_recs {cfg.tenant} {manifest.version}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

