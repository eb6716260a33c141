"""Offline evaluation of the whole serving pipeline (retrieve → rank → rerank) in-process.

Used by :mod:`training.evaluate` on the same test users as the retrieval scorers. For each test
user the serving library (:func:`serving.assembly.build_local_pipeline`, the code a Serve replica
runs) answers one ``home`` request at the user's test time, and the final slate of ``k`` items
is scored against the test item like any other scorer (protocol: docs/evaluation.md).

What the runtime sees ("train period"): the tenant's event log minus, for every user with a
test interaction, that user's events at or after it. The user's state is thus what serving
knew just before the test interaction; the protocol's exclusion (every earlier interaction of
the user) goes in ``exclude_item_ids``. Other users' events are all kept, as popularity and EASE see them.
Timeouts are raised to :data:`OFFLINE_TIMEOUT_MS`: offline quality must not depend on how busy
the machine is; requests that still degrade or fall back are counted in the report.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from core.clock import column_micros
from core.config import PlatformConfig, load_platform_config
from training.metrics import ranking_metrics

OFFLINE_TIMEOUT_MS = 10_000.0
SURFACE = "home"


def offline_platform(platform: PlatformConfig) -> PlatformConfig:
    """The platform config with every source / ranker timeout raised to the offline value."""
    raw = platform.model_dump(mode="json")
    for tenant in raw["tenants"]:
        for surface in tenant["surfaces"].values():
            for s in surface["sources"]:
                s["timeout_ms"] = OFFLINE_TIMEOUT_MS
            surface["ranker"]["timeout_ms"] = OFFLINE_TIMEOUT_MS
    for exp in raw.get("experiments", []):
        for v in exp["variants"]:
            for s in (v.get("overrides") or {}).get("sources") or []:
                s["timeout_ms"] = OFFLINE_TIMEOUT_MS
    return PlatformConfig.model_validate(raw)


def train_period_events(events: pa.Table, cutoff: dict[str, float]) -> pa.Table:
    """``events`` without any user's events at or after ``cutoff[user]`` (epoch seconds)."""
    if not cutoff:
        return events
    cut = pa.table(
        {
            "user_id": pa.array(list(cutoff), pa.string()),
            "_cut_us": pa.array(np.round(np.fromiter(cutoff.values(), np.float64) * 1e6).astype(np.int64)),
        }
    )
    joined = events.join(cut, "user_id", join_type="left outer")
    ts_us = column_micros(joined["ts"])
    keep = pc.or_kleene(pc.is_null(joined["_cut_us"]), pc.less(ts_us, joined["_cut_us"]))
    return joined.filter(pc.fill_null(keep, True)).drop_columns(["_cut_us"])


def request_cutoffs(events: pa.Table, cutoff: dict[str, float]) -> dict[str, float]:
    """``cutoff`` (user → time of the held-out engagement) moved back to the request that led
    to it: the earliest event of the engagement's ``request_id`` (its impressions, seconds
    before the click). Serving answers that request knowing only what came before it; the
    request's own impressions are its response, so they are not in the user's state (they
    were: the test item then counted as a recent impression, which a ranker can read as a
    tell). Engagements without a request (ratings) keep their time."""
    if not cutoff or events.num_rows == 0 or "request_id" not in events.column_names:
        return dict(cutoff)
    cut = pa.table({"user_id": pa.array(list(cutoff), pa.string()),
                    "_cut_us": pa.array(np.round(np.fromiter(cutoff.values(), np.float64) * 1e6).astype(np.int64))})  # fmt: skip
    ev = events.select(["user_id", "request_id", "ts"]).filter(pc.is_valid(events["request_id"]))
    ev = ev.append_column("_ts_us", column_micros(ev["ts"])).drop_columns(["ts"])
    at = ev.join(cut, "user_id").filter(pc.equal(pc.field("_ts_us"), pc.field("_cut_us")))
    requests = at.select(["user_id", "request_id"]).group_by(["user_id", "request_id"], use_threads=False).aggregate([])
    starts = ev.join(requests, ["user_id", "request_id"], join_type="inner").group_by("user_id", use_threads=False).aggregate([("_ts_us", "min")])
    out = dict(cutoff)
    for user, start in zip(starts["user_id"].to_pylist(), starts["_ts_us_min"].to_pylist(), strict=True):
        out[user] = min(out[user], start / 1e6)
    return out


def _users_table(data_root: str, tenant: str) -> pa.Table | None:
    try:
        ds = pads.dataset(data_root.rstrip("/") + "/users", format="parquet", partitioning="hive")
        return ds.to_table(filter=pads.field("tenant_id") == tenant)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None


def evaluate_pipeline(
    storage,
    platform_config: str | None,
    versions: dict[str, str],
    users: np.ndarray,
    test_ts: np.ndarray,
    exclude: list[np.ndarray],
    relevant: list[list[int]],
    cutoff: dict[str, float],
    k: int = 10,
    simulator=None,
    on_pipeline=None,
) -> dict:
    """Metrics of the final slates of ``users`` (one request each at ``test_ts``) plus
    ``requests``, ``fallbacks``, ``degraded`` counts and ``ms_per_request``.

    ``versions`` names the ``two_tower`` and ``ann_index`` registry versions and optionally a
    ``ranker`` (without one, serving's fallback order ranks, and the report says so);
    ``exclude`` / ``relevant`` are catalogue indices per user (as for the other scorers).
    With a :class:`training.simulated.ClickSimulator` the slates' ``expected_ctr@10`` too.
    ``on_pipeline`` is called with the built pipeline before the first request (a tool that
    records a stage's inputs wraps it there: :mod:`training.slate_tradeoff`)."""
    from core.contracts import Query
    from retrieval.similarity import for_ranker
    from serving.assembly import build_local_pipeline
    from serving.loaders import load_ranker_model, load_two_tower

    registry, tenant = storage.registry(), storage.tenant
    catalogue = storage.catalogue()
    # The loader serving uses: a tower and index that do not belong together are refused.
    artifacts = load_two_tower(registry, tenant, (versions["two_tower"], versions["ann_index"]))
    ranker_version = versions.get("ranker")
    ranker = load_ranker_model(registry, tenant, ranker_version) if ranker_version else None
    similarity = None
    if ranker_version:  # the ranker's retrieval_score, as serving computes it
        similarity = for_ranker(registry, tenant, ranker_version, catalogue,
                                loaded={versions["two_tower"]: artifacts.model})  # fmt: skip
    log = storage.eventlog().read(tenant)
    cutoff = request_cutoffs(log, cutoff)
    test_ts = np.array([min(float(t), cutoff.get(str(u), float(t))) for u, t in zip(users, test_ts, strict=True)])
    events = train_period_events(log, cutoff)
    pipe = build_local_pipeline(
        offline_platform(load_platform_config(platform_config)),
        tenant,
        catalogue=catalogue,
        events_table=events,
        users_table=_users_table(storage.data, tenant),
        two_tower=artifacts,
        ranker=ranker,
        versions={"ranker": ranker_version} if ranker_version else None,
        ranker_similarity={ranker_version: similarity} if similarity is not None else None,
    )
    if on_pipeline is not None:
        on_pipeline(pipe)
    ids = catalogue.item_ids

    async def run_all() -> tuple[np.ndarray, Counter, int, Counter]:
        topk = np.full((len(users), k), -1, dtype=np.int64)
        degraded: Counter = Counter()
        funnel: Counter = Counter()
        fallbacks = 0
        for r, (user, ts, ex) in enumerate(zip(users, test_ts, exclude, strict=True)):
            query = Query(
                request_id=f"offline-eval-{r}",
                tenant_id=tenant,
                user_id=str(user),
                surface=SURFACE,
                k=k,
                now=datetime.fromtimestamp(float(ts), UTC),
                exclude_item_ids=frozenset(str(i) for i in ids[ex]),
            )
            result = await pipe.recommend(query)
            slate = catalogue.index_of([s.item_id for s in result.slate])[:k]
            topk[r, : len(slate)] = slate
            fallbacks += result.fallback is not None
            degraded.update(d.split(":")[0] for d in result.decision.degraded)
            funnel.update(_funnel(result.decision, {str(ids[i]) for i in relevant[r]}, k))
            for name, items in _stage_orders(result.decision, k).items():
                stage_tops[name][r, : len(items)] = catalogue.index_of(items)
        return topk, degraded, fallbacks, funnel

    # Per request, the top k of the ranked candidates in other orders (see _stage_orders).
    stage_tops = {name: np.full((len(users), k), -1, dtype=np.int64) for name in STAGE_ORDERS}
    t0 = time.perf_counter()
    topk, degraded, fallbacks, funnel = asyncio.run(run_all())
    seconds = time.perf_counter() - t0
    def score(top: np.ndarray) -> dict:
        m = ranking_metrics(top, relevant, len(catalogue), ks=(k,), ndcg_ks=(k,), hr_ks=(k,), coverage_k=k)
        if simulator is not None:
            m[f"expected_ctr@{k}"] = simulator.expected_ctr(users, top, k)
        m[f"category_diversity@{k}"] = category_diversity(top, catalogue.category)
        return m

    metrics = score(topk)
    # Where quality is won or lost: the same ranked candidates ordered by each stage.
    metrics["stages"] = {**{name: score(top) for name, top in stage_tops.items()}, "final_slate": dict(metrics)}
    if simulator is not None:
        metrics[f"stage_expected_ctr@{k}"] = {n: m[f"expected_ctr@{k}"] for n, m in metrics["stages"].items()}
    return {
        **metrics,
        "ranker": ranker_version or "none (fallback order)",
        "requests": int(len(users)),
        "fallbacks": int(fallbacks),
        "degraded": dict(degraded),
        "ms_per_request": 1000.0 * seconds / max(1, len(users)),
        "funnel": {key: round(n / max(1, len(users)), 4) for key, n in sorted(funnel.items())},
        "train_period_events": int(events.num_rows),
    }


def category_diversity(top: np.ndarray, category: np.ndarray) -> float:
    """Mean intra-list category diversity of ``(U, k)`` lists (``-1`` = empty slot): the share
    of item pairs in a list whose categories differ (0 = one category, 1 = all different)."""
    vals = []
    for row in np.asarray(top):
        items = row[row >= 0]
        if len(items) < 2:
            continue
        c = category[items]
        same = (c[:, None] == c[None, :]).sum() - len(c)
        vals.append(1.0 - same / (len(c) * (len(c) - 1)))
    return float(np.mean(vals)) if vals else float("nan")


STAGE_ORDERS = ("by_two_tower_score", "by_ranker_click", "by_ranker_utility")


def _stage_orders(decision, k: int) -> dict[str, list[str]]:
    """The top ``k`` item ids of one request's *ranked* candidates (those that passed the rules
    and got a utility) by the two-tower's retrieval score (candidates it did not retrieve
    last), by the ranker's click probability, and by the utility (the ranker's order before
    the slate policy)."""
    table = decision.candidates
    ranked = [r for r, u in enumerate(table.utility) if u is not None]
    tt: dict[int, float] = {}
    for row, src, score in zip(table.provenance_row, table.provenance_source, table.provenance_score, strict=True):
        if src == "two_tower":
            tt[row] = max(score, tt.get(row, float("-inf")))
    click = table.task_scores.get("click", [None] * len(table.item_id))
    keys = {
        "by_two_tower_score": lambda r: tt.get(r, float("-inf")),
        "by_ranker_click": lambda r: click[r] if click[r] is not None else float("-inf"),
        "by_ranker_utility": lambda r: table.utility[r],
    }
    return {name: [table.item_id[r] for r in sorted(ranked, key=key, reverse=True)[:k]] for name, key in keys.items()}


def _funnel(decision, relevant: set[str], k: int) -> list[str]:
    """Where the test item went in one request, from its decision record: ``retrieved`` (among
    the merged candidates) or not; ``removed:<reason>`` by a rule or the slate's frequency
    cap; ``utility_top<k>`` (among the ``k`` best ranker utilities of what was scored);
    ``in_slate``. Averaged over users this says which stage loses the relevant items."""
    table = decision.candidates
    hits = [i for i in table.item_id if i in relevant]
    if not hits:
        return ["not_retrieved"]
    out = ["retrieved"]
    removed = {r.item_id: r.reason for r in decision.removals}
    out += [f"removed:{removed[i]}" for i in hits[:1] if i in removed]
    scored = sorted(
        ((u, i) for i, u in zip(table.item_id, table.utility, strict=True) if u is not None),
        key=lambda x: -x[0],
    )
    if any(i in relevant for _, i in scored[:k]):
        out.append(f"utility_top{k}")
    hit = next((s for s in decision.slate if s.item_id in relevant), None)
    if hit is not None:
        # How it got there: "utility_rank" (ranker order, MMR), "exploration", "pinned", ...
        out += ["in_slate", f"in_slate_by:{hit.reasons[0].split(':')[0] if hit.reasons else '?'}"]
    return out
