"""Train the two-tower retriever with Ray Train; publish a ``two_tower`` candidate.

    python -m training.two_tower --config configs/train/two_tower.yaml [--tenant T]
        [--smoke-test] [--resume]

Examples come from :mod:`training.datasets` (point-in-time, leave-last-out split) and stream
to the workers as Ray Dataset shards. Each epoch reports in-batch validation loss and
full-catalogue validation recall/NDCG (the query's history items excluded, close to the
protocol's train-item exclusion: a training monitor; the protocol metrics come from
``training.evaluate``) with a checkpoint; ``--resume`` continues
the latest run from its newest checkpoint.

Loss: in-batch sampled softmax with log-Q correction; with ``history_negatives: false`` an
in-batch item already in the query's history is not a negative for it (serving never shows it
again). ``lr_schedule: cosine`` decays the learning rate per step over the whole run. The
settings of ``configs/train/two_tower.yaml`` come from a validation grid (docs/evaluation.md);
the query tower's long-term history pool without a user-id embedding (``long_history_len: 100``,
``user_id: false``, 16 epochs) from docs/evaluation.md, "Long history, no user id".
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.features import item_features
from core.train_config import TwoTowerTrainConfig
from retrieval.losses import item_log_q, sampled_softmax_loss
from retrieval.two_tower import TwoTowerModel
from training import common, worker
from training.examples import two_tower_examples

TENSOR_COLUMNS = ["user", "history", "surface", "hour", "item", "category", "tags", "log_age_days"]
MONITOR = "val_ndcg@10"
"""Which checkpoints Ray Train keeps (``keep_checkpoints`` best): the headline metric of
docs/evaluation.md. Recall@50 (reported too) peaks an epoch or two later than NDCG@10, when the
model already ranks the head worse. :func:`_select_checkpoint` then picks among the kept ones
on the protocol's validation task."""


def _validate(model: TwoTowerModel, shard, items: dict, cfg: dict, device) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        item_vecs = model.item_tower(*(torch.as_tensor(items[k], device=device) for k in ("item", "category", "tags", "log_age_days")))
        n = loss_sum = hits50 = ndcg10 = 0.0
        for batch in shard.iter_torch_batches(batch_size=cfg["batch_size"], device=device):
            q, i = model(batch)
            b = len(q)
            history = None if cfg.get("history_negatives", True) else batch["history"]
            loss_sum += float(sampled_softmax_loss(q, i, temperature=cfg["temperature"], item_ids=batch["item"], history=history)) * b
            scores = q @ item_vecs.T  # (B, N)
            target = scores.gather(1, (batch["item"] - 1).clamp(min=0)[:, None])
            # Like the protocol, items the user already engaged with (the query's history) are
            # not candidates; a monitor that counts them ranks checkpoints by re-finding history.
            n_items = scores.shape[1]
            hist = torch.where(batch["history"] > 0, batch["history"] - 1, n_items)  # pad -> spare column
            scores = torch.cat([scores, scores.new_zeros(len(scores), 1)], 1).scatter(1, hist, float("-inf"))[:, :n_items]
            rank = (scores > target).sum(1)  # 0-based rank of the positive
            hits50 += float((rank < 50).sum())
            ndcg10 += float(torch.where(rank < 10, 1.0 / torch.log2(rank.double() + 2), 0.0).sum())
            n += b
    model.train()
    n, loss_sum, hits50, ndcg10 = worker.all_reduce_sum([n, loss_sum, hits50, ndcg10])
    n = max(n, 1.0)
    return {"val_loss": loss_sum / n, "val_recall@50": hits50 / n, "val_ndcg@10": ndcg10 / n, "val_examples": int(n)}


def train_loop(config: dict) -> None:
    """Per-worker loop: resume from the run's latest checkpoint, one report per epoch."""
    import ray.train
    import ray.train.torch

    device = ray.train.torch.get_device()
    worker.pin_threads(device, config.get("cpus_per_worker", 1))
    torch.manual_seed(config["seed"])
    model = TwoTowerModel.from_config(config["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    start_epoch = steps = 0
    meta = worker.resume(model, opt)
    if meta:
        start_epoch, steps = meta["epoch"] + 1, meta.get("steps", 0)
    model = ray.train.torch.prepare_model(model)
    core_model = model.module if hasattr(model, "module") else model
    log_q = torch.as_tensor(config["log_q"], device=device) if config["log_q"] is not None else None
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    for epoch in range(start_epoch, config["epochs"]):
        t0, n, loss_sum = time.perf_counter(), 0, 0.0
        # Unshuffled, one user's positives would be false in-batch negatives for each other.
        batches = worker.shuffled_batches(
            train_shard,
            batch_size=config["batch_size"],
            device=device,
            shuffle_rows=config["shuffle_buffer_rows"],
            seed=config["seed"] + epoch,
            drop_last=True,
        )
        for batch in batches:
            for group in opt.param_groups:
                group["lr"] = worker.learning_rate(config, steps)
            q, i = model(batch)
            lq = log_q[batch["item"]] if log_q is not None else None
            history = None if config.get("history_negatives", True) else batch["history"]
            loss = sampled_softmax_loss(q, i, lq, temperature=config["temperature"], item_ids=batch["item"], history=history)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            n += len(q)
            loss_sum += float(loss.detach()) * len(q)
        elapsed = time.perf_counter() - t0
        # Throughput and loss over all workers, not rank 0's shard alone.
        n_all, loss_all = worker.all_reduce_sum([float(n), loss_sum])
        metrics = {
            "epoch": epoch,
            "train_loss": loss_all / max(n_all, 1.0),
            "examples_per_s": n_all / max(elapsed, 1e-9),
            "steps": steps,
            "torch_threads": torch.get_num_threads(),
            **_validate(core_model, val_shard, config["items"], config, device),
        }
        worker.report_epoch(metrics, core_model, opt, {"epoch": epoch, "steps": steps})


PROTOCOL_KEYS = ("val_protocol_ndcg@10", "val_protocol_recall@50")


def _load_checkpoint(ckpt) -> TwoTowerModel:
    with ckpt.as_directory() as d:
        model = TwoTowerModel.from_config(json.loads((Path(d) / "config.json").read_text()))
        model.load_state_dict(torch.load(Path(d) / "model.pt", weights_only=True))
    return model.eval()


def _select_checkpoint(kept: list, ex_dir: Path, catalogue, cfg: TwoTowerTrainConfig) -> tuple[TwoTowerModel, dict]:
    """Of the checkpoints Ray Train kept (the best ``keep_checkpoints`` by the in-loop monitor),
    the one with the best validation NDCG@10 under the evaluation protocol: full catalogue,
    every train item of the user excluded (the in-loop monitor can exclude only the query's
    last ``HISTORY_LEN`` items). Falls back to the monitor when there are no validation users."""
    from training import evaluate

    data = evaluate.load_split(ex_dir)
    rows, exclude, relevant = evaluate.held_out(data, "validation", cfg.selection_users, cfg.seed)
    if len(rows) == 0:
        ckpt, metrics = max(kept, key=lambda cm: cm[1][MONITOR])
        return _load_checkpoint(ckpt), dict(metrics)
    scored, best = [], None  # one model in memory at a time besides the best so far
    for ckpt, metrics in sorted(kept, key=lambda cm: cm[1]["epoch"]):
        model = _load_checkpoint(ckpt)
        m, _ = evaluate.exact_two_tower_metrics(model, catalogue, data, rows, exclude, relevant)
        scored.append({**metrics, "val_protocol_ndcg@10": m["ndcg@10"], "val_protocol_recall@50": m["recall@50"]})
        if best is None or scored[-1]["val_protocol_ndcg@10"] > best[1]["val_protocol_ndcg@10"]:
            best = (model, scored[-1])
    common.summary_table(
        f"two_tower {cfg.tenant}: checkpoint choice on {len(rows)} validation users (protocol)",
        {
            f"epoch {m['epoch']}{' (kept)' if m is best[1] else ''}": f"NDCG@10 {m['val_protocol_ndcg@10']:.4f} "
            f"(in-loop {m[MONITOR]:.4f}), Recall@50 {m['val_protocol_recall@50']:.4f}"
            for m in scored
        },
    )
    return best


def _train_items(ex_dir: Path) -> np.ndarray:
    """The ``item`` column of the examples' train split, ``(n_train,)`` int64."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(str(ex_dir), format="parquet").to_table(columns=["item"], filter=pc.field("split") == "train")
    return table["item"].to_numpy().astype(np.int64)


def run_name(storage_dir: Path, tenant: str, resume: bool) -> str:
    prefix = f"two_tower-{tenant}-"
    runs = sorted(p.name for p in storage_dir.glob(prefix + "*")) if storage_dir.exists() else []
    if resume and runs:
        return runs[-1]
    return prefix + time.strftime("%Y%m%dT%H%M%S")


def main(argv=None) -> int:
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    args = common.parse_args(__doc__.splitlines()[0], "configs/train/two_tower.yaml", argv)
    cfg = common.load_job_config(args, TwoTowerTrainConfig)
    common.init_ray()
    common.reproducible_data_order()
    storage = common.JobStorage(cfg)
    common.quality_gate(args, storage)  # refuses bad data unless --allow-bad-data REASON
    catalogue = storage.catalogue()
    t0 = time.perf_counter()
    ex_dir = two_tower_examples(storage, cfg.num_partitions)
    examples = ray.data.read_parquet(str(ex_dir))
    train = examples.filter(expr="split == 'train'").select_columns(TENSOR_COLUMNS).randomize_block_order(seed=cfg.seed)
    # At most one row per user: materialised once instead of re-read and re-filtered from the
    # Parquet files by every epoch's monitor (about 10 s an epoch on `small`, 2 cores).
    validation = examples.filter(expr="split == 'validation'").select_columns(TENSOR_COLUMNS).materialize()
    # One int64 column of the train split (8 bytes an example) is cheaper than a groupby
    # shuffle over 200 partitions; read here, on the driver that counts it (the examples are in
    # this job's work dir), it costs no Ray Data pass either. Only its counts matter (log-Q).
    train_items = _train_items(ex_dir)
    n_items = len(catalogue)
    n_train = int(len(train_items))
    model_cfg = {
        "dim": cfg.dim,
        "embed_dim": cfg.embed_dim,
        "hidden": cfg.hidden,
        "dropout": cfg.dropout,
        "user_id": cfg.user_id,
        "user_dropout": cfg.user_dropout,
        "history_len": cfg.history_len,
        "long_history_len": cfg.long_history_len,
        "temperature": cfg.temperature,
        "n_items": n_items,
        "n_categories": len(catalogue.categories),
        "n_tags": len(catalogue.tag_vocab),
    }
    now = float(np.nanmax(catalogue.created_at))
    loop_config = {
        "model": model_cfg,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "lr_schedule": cfg.lr_schedule,
        # Optimiser steps of the whole run (every worker takes the same number, drop_last).
        "total_steps": cfg.epochs * max(n_train // (cfg.batch_size * cfg.num_workers), 1),
        "history_negatives": cfg.history_negatives,
        "weight_decay": cfg.weight_decay,
        "epochs": cfg.epochs,
        "cpus_per_worker": cfg.cpus_per_worker,
        "batch_size": cfg.batch_size,
        "shuffle_buffer_rows": cfg.shuffle_buffer_rows,
        "temperature": cfg.temperature,
        "log_q": item_log_q(train_items, n_items, strength=cfg.log_q_strength).tolist()
        if cfg.log_q_correction
        else None,
        "items": item_features(catalogue, now),
    }
    storage_dir = storage.work / "runs"
    name = run_name(storage_dir, cfg.tenant, args.resume)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
            resources_per_worker={**cfg.worker_resources, "CPU": cfg.cpus_per_worker},
        ),  # fmt: skip
        datasets={"train": train, "validation": validation},
        dataset_config=common.train_data_config(cfg.num_workers),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage_dir),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute=MONITOR,
                checkpoint_score_order="max",
            ),
        ),
    )
    result = trainer.fit()
    model, best_metrics = _select_checkpoint(result.best_checkpoints, ex_dir, catalogue, cfg)
    with tempfile.TemporaryDirectory() as out:
        model.save(out)
        keys = ("val_loss", "val_recall@50", "val_ndcg@10", "train_loss", "epoch", *PROTOCOL_KEYS)
        metrics = {k: best_metrics[k] for k in keys if k in best_metrics}
        metrics.update({"train_examples": n_train, "examples_per_s": result.metrics.get("examples_per_s")})
        manifest = storage.registry().publish(
            "two_tower",
            cfg.tenant,
            out,
            owner=common.owner(cfg),
            lineage=common.lineage(storage),
            metrics=metrics,
            config={"model": model_cfg, "train": cfg.model_dump(), "run": name, "examples": str(ex_dir)},
            description=f"two-tower trained by {name}",
        )
    common.summary_table(
        f"two_tower {cfg.tenant}: candidate {manifest.version}",
        {**metrics, "run": name, "seconds": time.perf_counter() - t0},
    )
    print(f"published two_tower {cfg.tenant} {manifest.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
