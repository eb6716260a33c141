"""Train the multi-task ranker with Ray Train; calibrate; publish a ``ranker`` candidate.

    python -m training.ranker --config configs/train/ranker.yaml [--tenant T] [--smoke-test] [--resume]

One example per logged impression (:func:`training.datasets.ranker_dataset`), labels
click/like/hide, split by time: the latest ``holdout_fraction`` of impressions is the holdout,
the ``validation_fraction`` before it fits the per-task calibration. ``retrieval_score`` is the
dot product of the point-in-time query vector and the item vector of the two-tower version
named by ``two_tower_alias`` (0 when there is none). Holdout metrics per task: AUC, log-loss,
ECE, and the AUC of a popularity-only scorer for comparison.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from core.features import CAT_FEATURES, DENSE_FEATURES, SOURCE_KINDS, PopularityTimeline
from core.train_config import RankerTrainConfig
from ranking.calibration import apply_calibration, fit_calibration
from ranking.model import MultiTaskRanker
from retrieval.similarity import TwoTowerSimilarity
from retrieval.two_tower import TwoTowerModel
from training import common, worker
from training.datasets import (
    CandidateSampler,
    assign_time_split,
    popularity_timeline,
    ranker_dataset,
    time_split_bounds,
)
from training.examples import DONE, examples_dir
from training.metrics import auc, classification_metrics

RETRIEVAL_COL = DENSE_FEATURES.index("retrieval_score")
SOURCE_COL = CAT_FEATURES.index("source")
POPULARITY_COL = DENSE_FEATURES.index("log_popularity")


def build_examples(storage, cfg: RankerTrainConfig, tt_dir: Path | None, tt_version: str | None) -> Path | None:
    """The ranker's example directory, or None when there is nothing to learn from (no logged
    impressions and no two-tower to draw candidates with).

    Written without a ``split``: :func:`select_rows` assigns it by time over the rows the
    ranker learns from (a split over all examples would be overwritten there, and cost a read
    and a rewrite of every example)."""
    sampling = tt_dir is not None and cfg.negatives > 0
    extra = (tt_version or "no-retrieval") + (f"-n{cfg.negatives}-k{cfg.negatives_top_k}" if sampling else "")
    out = examples_dir(storage, "ranker", extra)
    if (out / DONE).exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    catalogue = storage.catalogue()
    events = storage.eventlog().ray_dataset(cfg.tenant)
    sampler = None
    if tt_dir is not None:
        # retrieval_score is q · v of this two-tower, as serving's TwoTowerSimilarity computes it.
        similarity = TwoTowerSimilarity(TwoTowerModel.load(tt_dir), catalogue, tt_version or "")
        timeline = popularity_timeline(events, catalogue) if sampling else PopularityTimeline(np.zeros(0), np.zeros(0))
        sampler = CandidateSampler(similarity, timeline, negatives=cfg.negatives if sampling else 0, top_k=cfg.negatives_top_k)
    ranker_dataset(events, catalogue, cfg.num_partitions, sampler).drop_columns(
        ["user", "history", "surface", "hour"]
    ).write_parquet(str(out))
    if not any(out.glob("*.parquet")):
        shutil.rmtree(out, ignore_errors=True)
        return None
    (out / DONE).touch()
    return out


def select_rows(ds, cfg: RankerTrainConfig, has_two_tower: bool):
    """The examples the ranker learns from (``rows``, ``kinds``) with ``split`` assigned by time
    over those rows; returns the dataset, a description and the kind of rows chosen
    (``impressions``, ``engagements`` or ``both``).

    ``rows: retrieval_heldout`` keeps the rows of each user's two-tower *validation*
    interaction: the two-tower trained on every other interaction, so their ``retrieval_score``
    is memorised (an engaged item scores far above what an unseen next item would), and a ranker
    stacked on it learns to trust the score and nothing else. ``kinds: auto`` learns from logged
    impressions where the log has them (what users clicked given what was shown), else from
    the engagement rows (interaction-only tenants)."""
    cols = ["cat", "dense", "ts", "kind", "heldout", "retrieval_heldout", "user_id", "request_id", *cfg.tasks]
    ds = ds.select_columns(cols)
    rows = cfg.rows if has_two_tower else "all"
    if rows == "retrieval_heldout":
        ds = ds.map_batches(_keep_rows, fn_kwargs={"column": "retrieval_heldout", "values": [True]}, batch_size=65536)
    ts_by_kind = _ts_by_kind(ds)  # one pass: the kinds present, and the times the split is cut on
    kinds = {k: len(t) for k, t in ts_by_kind.items()}
    wanted = cfg.kinds
    if wanted == "auto":
        wanted = "impressions" if kinds.get("impression") else "engagements"
    keep = {"impressions": ["impression"], "engagements": ["engagement"], "both": ["impression", "engagement"]}[wanted]
    ds = ds.map_batches(_keep_rows, fn_kwargs={"column": "kind", "values": keep}, batch_size=65536)
    ts = np.concatenate([ts_by_kind[k] for k in keep if k in ts_by_kind] or [np.zeros(0)])
    val_start, hold_start = time_split_bounds(ts, cfg.holdout_fraction, cfg.validation_fraction)
    ds = ds.map_batches(assign_time_split, fn_kwargs={"val_start": val_start, "hold_start": hold_start}, batch_size=4096)
    ds = ds.map_batches(_with_group, batch_size=4096)
    ds = ds.select_columns(["cat", "dense", "split", "group", *cfg.tasks])
    if rows == "retrieval_heldout":
        # A slice (one interaction per user): held in the object store once rather than
        # filtered out of every example again on each epoch.
        ds = ds.materialize()
    return ds, f"{rows}, {wanted} ({len(ts)} rows of {kinds})", wanted


def _with_group(batch: dict) -> dict:
    """``group``: the moment a row competes in, for ranking metrics — its logged request, or
    for an engagement row (no request) the user and time of the engagement."""
    keys = [
        f"{u}|r|{r}" if r is not None else f"{u}|t|{t!r}"
        for u, r, t in zip(batch["user_id"], batch["request_id"], batch["ts"], strict=True)
    ]
    batch["group"] = np.array([zlib.crc32(k.encode()) for k in keys], dtype=np.int64)
    return batch


def grouped_ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10) -> tuple[float, int]:
    """Mean NDCG@k of the positive ``labels`` when each group's rows are ordered by ``scores``
    (descending; ties broken against the positives), over groups with a positive and a
    negative; returns ``(mean, groups counted)``."""
    scores, labels, groups = np.asarray(scores, float), np.asarray(labels) > 0.5, np.asarray(groups)
    order = np.lexsort((labels, -scores, groups))  # by group, score desc, negatives first on ties
    g, lab = groups[order], labels[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    total, n = 0.0, 0
    for a, b in zip(starts, ends, strict=True):
        y = lab[a:b]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            continue
        dcg = float((y[:k] * discounts[: min(k, len(y))]).sum())
        ideal = float(discounts[: min(k, n_pos)].sum())
        total += dcg / ideal
        n += 1
    return (total / n if n else float("nan")), n


def choose_blend(model: MultiTaskRanker, ds, grid: list[float], first: float) -> tuple[float, list[tuple[float, float]]]:
    """The retrieval blend (tried: ``first``, then ``grid``) whose click order ranks the engaged
    items of ``ds``'s groups highest (:func:`grouped_ndcg`); returns it and ``(blend, ndcg)``
    per blend tried. The model's raw click logit is computed once; the blend only adds
    ``blend`` standard deviations of the retrieval score to it."""
    col = DENSE_FEATURES.index("retrieval_score")
    base, rs, labels, groups = [], [], [], []
    saved = model.cfg.get("retrieval_blend")
    model.cfg["retrieval_blend"] = 0.0
    try:
        for b in ds.iter_batches(batch_size=8192, batch_format="numpy"):
            base.append(model.logits(b["cat"], b["dense"])["click"])
            z = (b["dense"][:, col] - model.cfg["dense_mean"][col]) / model.cfg["dense_std"][col]
            rs.append(np.nan_to_num(z.astype(np.float32), nan=0.0))
            labels.append(b["click"])
            groups.append(b["group"])
    finally:
        model.cfg["retrieval_blend"] = saved
    if not base:
        return first, []
    base, rs, labels, groups = (np.concatenate(x) for x in (base, rs, labels, groups))
    tried: list[tuple[float, float]] = []
    for blend in dict.fromkeys([first, *grid]):
        tried.append((float(blend), grouped_ndcg(base + blend * rs, labels, groups)[0]))
    scored = [t for t in tried if np.isfinite(t[1])]
    best = max(scored, key=lambda t: t[1])[0] if scored else first  # max keeps the first of ties
    return best, tried


def _keep_rows(batch: dict, column: str, values: list) -> dict:
    mask = np.isin(batch[column], values)
    return {k: v[mask] for k, v in batch.items()}


def _ts_by_kind(ds) -> dict[str, np.ndarray]:
    """Row kind -> the ``ts`` of its rows (8 bytes a row reach the driver)."""
    parts: dict[str, list[np.ndarray]] = {}
    for b in ds.select_columns(["kind", "ts"]).iter_batches(batch_format="numpy", batch_size=None):
        kind = b["kind"].astype(str)
        for k in np.unique(kind):
            parts.setdefault(str(k), []).append(np.asarray(b["ts"][kind == k], dtype=np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    device = ray.train.torch.get_device()
    worker.pin_threads(device, config.get("cpus_per_worker", 1))
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    model = MultiTaskRanker.from_config(config["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    meta = worker.resume(model, opt)
    start = meta["epoch"] + 1 if meta else 0
    model = ray.train.torch.prepare_model(model)
    core_model = model.module if hasattr(model, "module") else model
    tasks = config["model"]["tasks"]
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")
    for epoch in range(start, config["epochs"]):
        t0, n, total = time.perf_counter(), 0, 0.0
        batches = worker.shuffled_batches(
            ray.train.get_dataset_shard("train"),
            batch_size=config["batch_size"],
            device=device,
            shuffle_rows=config["shuffle_buffer_rows"],
            seed=seed * 1000 + epoch,
        )
        for batch in batches:
            out = model(batch["cat"], batch["dense"])
            loss = sum(bce(out[t], batch[t]) for t in tasks) / len(batch["cat"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(batch["cat"])
            total += float(loss.detach()) * len(batch["cat"])
        val_n, val_loss = 0, 0.0
        core_model.eval()
        with torch.no_grad():
            for batch in ray.train.get_dataset_shard("validation").iter_torch_batches(batch_size=4096, device=device):
                out = core_model(batch["cat"], batch["dense"])
                val_loss += float(sum(bce(out[t], batch[t]) for t in tasks))
                val_n += len(batch["cat"])
        core_model.train()
        val_loss, val_n = worker.all_reduce_sum([val_loss, val_n])
        metrics = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": float(val_loss / max(val_n, 1)), "examples_per_s": n / max(time.perf_counter() - t0, 1e-9)}
        worker.report_epoch(metrics, core_model, opt, {"epoch": epoch})


def _predict_split(model: MultiTaskRanker, ds, tasks: list[str]) -> tuple[dict, dict, np.ndarray]:
    """Streams a split through the model: raw logits, labels per task, popularity feature."""
    logits = {t: [] for t in tasks}
    labels = {t: [] for t in tasks}
    pop = []
    for b in ds.iter_batches(batch_size=8192, batch_format="numpy"):
        out = model.logits(b["cat"], b["dense"])
        for t in tasks:
            logits[t].append(out[t])
            labels[t].append(b[t])
        pop.append(b["dense"][:, POPULARITY_COL])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return {t: cat(v) for t, v in logits.items()}, {t: cat(v) for t, v in labels.items()}, cat(pop)


def main(argv=None) -> int:
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.two_tower import run_name

    args = common.parse_args(__doc__.splitlines()[0], "configs/train/ranker.yaml", argv)
    cfg = common.load_job_config(args, RankerTrainConfig)
    common.init_ray()
    common.reproducible_data_order()
    t0 = time.perf_counter()
    storage = common.JobStorage(cfg)
    common.quality_gate(args, storage)  # refuses bad data unless --allow-bad-data REASON
    registry = storage.registry()
    tt_version = registry.resolve("two_tower", cfg.tenant, cfg.two_tower_alias) if cfg.two_tower_alias else None
    tt_dir = registry.local_path("two_tower", cfg.tenant, tt_version) if tt_version else None
    ex_dir = build_examples(storage, cfg, tt_dir, tt_version)
    if ex_dir is None:
        common.console.print(
            f"[yellow]ranker {cfg.tenant}: the event log has no impressions, so there is nothing to learn "
            "click/like/hide from; no candidate published (serving ranks with the fallback order)"
        )
        return 0
    examples, chosen, chosen_kind = select_rows(ray.data.read_parquet(str(ex_dir)), cfg, tt_version is not None)
    common.console.print(f"ranker {cfg.tenant}: training rows: {chosen}")
    splits = {s: examples.filter(expr=f"split == '{s}'").drop_columns(["split"]) for s in ("train", "validation", "holdout")}
    train_splits = {s: splits[s].drop_columns(["group"]) for s in ("train", "validation")}
    n_sources = len(SOURCE_KINDS)
    dense_stats = splits["train"].select_columns(["dense", "cat"]).map_batches(
        lambda b: {
            "s": b["dense"].sum(0)[None],
            "ss": (b["dense"].astype(np.float64) ** 2).sum(0)[None],
            "n": np.array([len(b["dense"])]),
            "src": np.bincount(b["cat"][:, SOURCE_COL], minlength=n_sources)[None],
        },
        batch_size=65536,
    ).take_all()
    src_counts = sum(r["src"] for r in dense_stats)
    # Source indices the model sees in training, most common first (serving maps others to it).
    source_seen = [int(i) for i in np.argsort(-src_counts, kind="stable") if src_counts[i] > 0]
    n = sum(int(r["n"]) for r in dense_stats)
    mean = sum(r["s"] for r in dense_stats) / max(n, 1)
    std = np.sqrt(np.maximum(sum(r["ss"] for r in dense_stats) / max(n, 1) - mean**2, 1e-6))
    catalogue = storage.catalogue()
    model_cfg = {
        "tasks": list(cfg.tasks),
        "n_items": len(catalogue),
        "n_categories": len(catalogue.categories),
        "embed_dim": cfg.embed_dim,
        "n_experts": cfg.n_experts,
        "expert_hidden": cfg.expert_hidden,
        "tower_hidden": cfg.tower_hidden,
        "dropout": cfg.dropout,
        "dense_mean": [float(x) for x in mean],
        "dense_std": [float(x) for x in std],
        "source_seen": source_seen,
        "dense_features": cfg.dense_features,
        "cat_features": cfg.cat_features,
        "retrieval_blend": cfg.retrieval_blend if tt_version else 0.0,
        "rows": chosen,
    }
    storage_dir = storage.work / "runs"
    name = run_name(storage_dir, cfg.tenant, args.resume).replace("two_tower-", "ranker-")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "model": model_cfg,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "cpus_per_worker": cfg.cpus_per_worker,
            "shuffle_buffer_rows": cfg.shuffle_buffer_rows,
        },
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}),
        datasets={"train": train_splits["train"].randomize_block_order(seed=cfg.seed), "validation": train_splits["validation"]},
        dataset_config=common.train_data_config(cfg.num_workers),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage_dir),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_loss", checkpoint_score_order="min"),
        ),
    )
    result = trainer.fit()
    best_ckpt, best = min(result.best_checkpoints, key=lambda cm: cm[1]["val_loss"])
    with best_ckpt.as_directory() as d:
        model = MultiTaskRanker.from_config(json.loads((Path(d) / "config.json").read_text()))
        model.load_state_dict(torch.load(Path(d) / "model.pt", weights_only=True))
    blend_rows: list[tuple[str, str]] = []
    # Only where the validation rows are the candidates serving ranks (engagement rows: the
    # engaged item among retrieved ones). Impression rows rank what the logging policy showed,
    # where the click head alone wins (blend 0) although on serving's ~500 candidates it loses
    # clicks and next-item hits (docs/evaluation.md, "Ranker v2", point 5).
    if tt_version and cfg.retrieval_blend_grid and "click" in cfg.tasks and chosen_kind == "engagements":
        blend, tried = choose_blend(model, splits["validation"], cfg.retrieval_blend_grid, cfg.retrieval_blend)
        model.cfg["retrieval_blend"] = blend
        model.cfg["retrieval_blend_tried"] = [[b, None if not np.isfinite(v) else round(v, 5)] for b, v in tried]
        blend_rows = [("retrieval blend (validation ndcg@10)", "  ".join(f"{b:g}: {v:.4f}" for b, v in tried) + f"  -> {blend:g}")]
    val_logits, val_labels, _ = _predict_split(model, splits["validation"], cfg.tasks)
    calibration = {t: fit_calibration(val_logits[t], val_labels[t]) for t in cfg.tasks}
    model.cfg["calibration"] = calibration
    hold_logits, hold_labels, hold_pop = _predict_split(model, splits["holdout"], cfg.tasks)
    metrics: dict = {"epoch": best["epoch"], "val_loss": best["val_loss"], "holdout_examples": int(len(hold_pop)),
                     "retrieval_blend": float(model.cfg.get("retrieval_blend") or 0.0)}  # fmt: skip
    rows = []
    for t in cfg.tasks:
        m = classification_metrics(apply_calibration(hold_logits[t], calibration[t]), hold_labels[t])
        m["popularity_auc"] = auc(hold_pop, hold_labels[t])
        m["calibration"] = calibration[t]["method"]
        for k, v in m.items():
            metrics[f"{t}_{k}"] = v
        rows.append((t, f"auc {m['auc']:.4f}  pop-auc {m['popularity_auc']:.4f}  logloss {m['log_loss']:.4f}  ece {m['ece']:.4f}  cal {m['calibration']}"))
    with tempfile.TemporaryDirectory() as out:
        model.save(out)
        manifest = registry.publish(
            "ranker",
            cfg.tenant,
            out,
            owner=common.owner(cfg),
            lineage=common.lineage(storage, {"two_tower": tt_version} if tt_version else {}),
            metrics=metrics,
            config={"model": {k: v for k, v in model.cfg.items() if k not in ("dense_mean", "dense_std")}, "train": cfg.model_dump(), "run": name},
            description=f"multi-task ranker trained by {name}",
        )
    common.summary_table(f"ranker {cfg.tenant}: candidate {manifest.version}", [*rows, *blend_rows, ("retrieval_score from", tt_version or "none (0)"), ("seconds", time.perf_counter() - t0)])
    print(f"published ranker {cfg.tenant} {manifest.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
