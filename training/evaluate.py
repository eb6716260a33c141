"""Offline retrieval evaluation (protocol: docs/evaluation.md); writes a JSON report.

    python -m training.evaluate --config configs/train/evaluate.yaml [--tenant T] [--smoke-test]

Leave-last-out: each user's last interaction is the test item; every scorer ranks the
tenant's whole catalogue minus every item the user interacted with before (train and validation
items: serving never recommends those again), from what was known just before the test
interaction. Scorers, same users and split: the two-tower (exact brute force), the ScaNN
index, popularity, and EASE; then the whole serving pipeline (retrieve → rank → rerank, in
process, :mod:`training.evaluate_pipeline`) whose final top-10 slate is scored the same way
(``"pipeline"`` in the report).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from core.config import load_platform_config
from core.train_config import EvaluateConfig
from retrieval.ease import EaseRecommender
from retrieval.index import BruteForceIndex, load_index
from retrieval.two_tower import TwoTowerModel
from training import common
from training.examples import two_tower_examples
from training.metrics import ranking_metrics
from training.simulated import ClickSimulator

PROTOCOL = "leave-last-out/full-catalogue/exclude-history-v5"
KMAX = 50
QUERY_COLUMNS = ["user", "history", "surface", "hour"]


def load_split(ex_dir) -> dict[str, np.ndarray]:
    """Evaluation reads the (small) example columns it needs on the driver.

    Once per process and examples directory (they are immutable once complete, see
    :mod:`training.examples`): the launch review replays the pipeline for the candidate and for
    production (and the two-tower without the candidate ranker) on the same rows, so the same
    users, without another Ray Data pass each. The arrays are read-only: callers share them."""
    from training.examples import DONE

    done = Path(ex_dir) / DONE
    if not done.exists():  # not known complete (a directory written by hand): read it each time
        return _read_split(str(ex_dir))
    return dict(_cached_split(str(ex_dir), done.stat().st_mtime_ns))


@functools.lru_cache(maxsize=1)
def _cached_split(ex_dir: str, _complete_at: int) -> dict[str, np.ndarray]:
    """:func:`_read_split`, keyed by the directory and its completion marker's time: a
    rewrite is read again."""
    return _read_split(ex_dir)


def _read_split(ex_dir: str) -> dict[str, np.ndarray]:
    import ray.data

    ds = ray.data.read_parquet(ex_dir).select_columns(["user_id", "item", "split", "ts", *QUERY_COLUMNS])
    parts = list(ds.iter_batches(batch_format="numpy", batch_size=None))
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for array in data.values():
        array.flags.writeable = False
    return data


def top_k_excluding(scores: np.ndarray, exclude: list[np.ndarray], k: int) -> np.ndarray:
    """``(U, N)`` scores -> ``(U, k)`` item indices, best first, excluded items never returned."""
    scores = scores.copy()
    for r, ex in enumerate(exclude):
        scores[r, ex] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def held_out(data: dict[str, np.ndarray], split: str, max_users: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[list[int]]]:
    """The protocol's ranking task on ``split`` (``"test"`` or ``"validation"``): rows with a
    known item (a seeded sample of at most ``max_users``), every item the user interacted with
    before the held-out one (excluded from the ranking: train items, and for ``test`` the
    validation item too, as serving's ``already_interacted`` rule removes them) and the
    held-out item."""
    item0 = data["item"] - 1  # catalogue index; -1 unknown
    rows = np.flatnonzero((data["split"] == split) & (item0 >= 0))
    rng = np.random.default_rng(seed)
    if len(rows) > max_users:
        rows = np.sort(rng.choice(rows, max_users, replace=False))
    earlier = ("train", "validation") if split == "test" else ("train",)
    known = np.isin(data["split"], earlier) & (item0 >= 0)
    by_user: dict[str, list[int]] = {}
    for u, i in zip(data["user_id"][known], item0[known], strict=True):
        by_user.setdefault(u, []).append(int(i))
    exclude = [np.unique(np.asarray(by_user.get(u, []), dtype=np.int64)) for u in data["user_id"][rows]]
    return rows, exclude, [[int(item0[r])] for r in rows]


def exact_two_tower_top(
    model: TwoTowerModel, catalogue, data: dict[str, np.ndarray], rows: np.ndarray, exclude: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``KMAX`` lists of ``model`` by exact search over the catalogue (item ages at the
    newest item's creation, as the index is built) and the query vectors of ``rows``."""
    from retrieval.similarity import similarity_item_features

    item_vecs = model.encode_items(similarity_item_features(catalogue))
    queries = model.encode_queries({k: data[k][rows] for k in QUERY_COLUMNS})
    exact = BruteForceIndex(item_vecs, catalogue.item_ids)
    return index_top_k(exact, queries, exclude, KMAX), queries


def exact_two_tower_metrics(
    model: TwoTowerModel, catalogue, data: dict[str, np.ndarray], rows: np.ndarray, exclude: list[np.ndarray], relevant: list[list[int]]
) -> tuple[dict[str, float], np.ndarray]:
    """Protocol metrics of ``model`` by exact search (:func:`exact_two_tower_top`); also
    returns the query vectors of ``rows``."""
    top, queries = exact_two_tower_top(model, catalogue, data, rows, exclude)
    return ranking_metrics(top, relevant, len(catalogue)), queries


def index_top_k(index, queries: np.ndarray, exclude: list[np.ndarray], k: int) -> np.ndarray:
    """ANN top-k with the excluded items filtered out (over-fetch by the longest exclusion list)."""
    extra = max((len(e) for e in exclude), default=0)
    _, rows = index.search(queries, min(len(index), k + extra))
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for r, (row, ex) in enumerate(zip(rows, exclude, strict=True)):
        kept = row[~np.isin(row, ex)][:k]
        out[r, : len(kept)] = kept
    return out


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], "configs/train/evaluate.yaml", argv)
    cfg = common.load_job_config(args, EvaluateConfig)
    if args.smoke_test:
        cfg = cfg.model_copy(update={"max_users": min(cfg.max_users, 300)})
    common.init_ray()
    t0 = time.perf_counter()
    storage = common.JobStorage(cfg)
    registry = storage.registry()
    catalogue = storage.catalogue()
    n_items = len(catalogue)
    data = load_split(two_tower_examples(storage, cfg.num_partitions))
    item0 = data["item"] - 1  # catalogue index; -1 unknown
    train = (data["split"] == "train") & (item0 >= 0)
    # Every user's test time, sampled or not: the pipeline's "train period" ends there.
    test_all = data["split"] == "test"
    cutoff = dict(zip(data["user_id"][test_all].tolist(), data["ts"][test_all].tolist(), strict=True))
    test_rows, exclude, relevant = held_out(data, "test", cfg.max_users, cfg.seed)
    users = data["user_id"][test_rows]
    results: dict[str, dict] = {}
    # Synthetic data knows its click model: each list is also scored by the clicks it would earn.
    simulator = ClickSimulator.load(storage.data, cfg.tenant, catalogue)

    def score(top: np.ndarray) -> dict[str, float]:
        metrics = ranking_metrics(top, relevant, n_items)
        if simulator is not None:
            metrics["expected_ctr@10"] = simulator.expected_ctr(users, top)
        return metrics

    pop = np.bincount(item0[train], minlength=n_items).astype(np.float32)
    results["popularity"] = score(top_k_excluding(np.tile(pop, (len(users), 1)), exclude, KMAX))

    if n_items <= cfg.ease_max_items:
        ease = EaseRecommender(cfg.ease_lambda).fit(data["user_id"][train], item0[train], n_items)
        # A user's EASE input is what the exclusion holds: every interaction before the test one.
        ease_scores = np.vstack([ease.score(exclude[s : s + 1024]) for s in range(0, len(exclude), 1024)])
        results["ease"] = score(top_k_excluding(ease_scores, exclude, KMAX))

    versions = {}
    tt_version = registry.resolve("two_tower", cfg.tenant, cfg.two_tower_alias)
    if tt_version:
        versions["two_tower"] = tt_version
        model = TwoTowerModel.load(registry.local_path("two_tower", cfg.tenant, tt_version))
        top, queries = exact_two_tower_top(model, catalogue, data, test_rows, exclude)
        results["exact"] = score(top)
        idx_version = registry.resolve("ann_index", cfg.tenant, cfg.index_alias)
        if idx_version:
            index = load_index(registry.local_path("ann_index", cfg.tenant, idx_version))
            if index.item_tower_version == tt_version:
                versions["ann_index"] = idx_version
                results["scann"] = score(index_top_k(index, queries, exclude, KMAX))
            else:
                common.console.print(f"[yellow]ann_index {idx_version} was built from {index.item_tower_version}, not {tt_version}: skipped")

    pipeline = None
    ranker_version = registry.resolve("ranker", cfg.tenant, cfg.ranker_alias)
    configured = any(t.id == cfg.tenant for t in load_platform_config(cfg.platform_config).tenants)
    if cfg.pipeline and "ann_index" in versions and configured:
        from training.evaluate_pipeline import evaluate_pipeline

        if ranker_version:
            versions["ranker"] = ranker_version
        pipeline = evaluate_pipeline(
            storage, cfg.platform_config, versions, users, data["ts"][test_rows], exclude, relevant, cutoff,
            simulator=simulator,
        )
    elif cfg.pipeline:
        why = "needs a two_tower and an ann_index built from it" if configured else f"tenant {cfg.tenant} is not in the platform config"
        common.console.print(f"[yellow]pipeline evaluation skipped: {why}")

    if simulator is not None:
        # The ceiling: each user's top 10 by the true click probability.
        results["true_click_model"] = score(top_k_excluding(simulator.item_logits(users), exclude, KMAX))

    model_key = "scann" if "scann" in results else "exact" if "exact" in results else None
    report = {
        "protocol": PROTOCOL,
        "dataset": {"tenant": cfg.tenant, "dataset_version": storage.dataset_version(), "items": n_items, "test_users": int(len(users))},
        "versions": versions,
        "metrics": results.get(model_key, {}),
        "model_scorer": model_key,
        "baselines": {k: v for k, v in results.items() if k != model_key},
        "pipeline": pipeline,
        "seconds": time.perf_counter() - t0,
    }
    out = common.write_json(storage.work / "reports" / f"evaluate-{time.strftime('%Y%m%dT%H%M%S')}.json", report)
    _print_table({**results, **({"pipeline": pipeline} if pipeline else {})}, cfg.tenant, len(users))
    if pipeline:
        common.console.print(
            f"pipeline: top-10 final slates, {pipeline['requests']} requests, {pipeline['fallbacks']} fell back, "
            f"degraded {pipeline['degraded'] or 'none'}, {pipeline['ms_per_request']:.1f} ms/request"
        )
        if "stage_expected_ctr@10" in pipeline:
            stages = ", ".join(f"{name} {v:.4f}" for name, v in pipeline["stage_expected_ctr@10"].items())
            common.console.print(f"pipeline expected clicks per slot, ranked candidates ordered by stage: {stages}")
    print(f"report: {out}")
    return 0


def _print_table(results: dict[str, dict], tenant: str, n_users: int) -> None:
    from rich.table import Table

    cols = ["hr@10", "recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "mrr", "coverage@10"]
    if any("expected_ctr@10" in m for m in results.values()):
        cols.append("expected_ctr@10")
    table = Table(title=f"evaluate {tenant}: {n_users} test users, full catalogue, earlier interactions excluded")
    table.add_column("scorer")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in results.items():
        table.add_row(name, *(f"{m.get(c, float('nan')):.4f}" for c in cols))
    common.console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
