"""Two-tower training throughput: Ray Train TorchTrainer (1 and 2 workers) vs a plain loop.

    python -m benchmarks.bench_training [--examples 100000] [--epochs 3] [--batch-size 512]
        [--items 5000] [--smoke]

Every run trains the same :class:`retrieval.two_tower.TwoTowerModel` (dims, temperature, lr
schedule and history-negative rule of ``configs/train/two_tower.yaml``) with the same loss
(in-batch sampled softmax, log-Q) on the
same synthetic examples (Zipf item popularity, random histories) and batch size:

* ``plain`` — one process, a shuffled numpy array sliced into batches, ``torch`` with as many
  threads as a Ray Train worker gets (``cpus_per_worker``, 1), and again with every core;
* ``ray_train_wN`` — the production per-worker loop (:func:`training.two_tower.train_loop`,
  validation and checkpoints included) on a Ray Dataset, ``N`` workers of 1 CPU each.

examples/s is measured over each epoch's training batches only (validation and checkpoint time
excluded, the same for every run) and the best epoch after the first (warm-up) is reported.
Writes ``benchmarks/results/bench_training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from core.catalogue import MAX_TAGS
from core.features import HISTORY_LEN, SURFACE_BUCKETS, USER_BUCKETS
from retrieval.losses import item_log_q, sampled_softmax_loss
from retrieval.two_tower import TwoTowerModel
from training.worker import learning_rate

OUT = Path(__file__).parent / "results" / "bench_training.json"


def synthetic_examples(n: int, n_items: int, n_categories: int, n_tags: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` two-tower examples with the job's columns (``training.two_tower.TENSOR_COLUMNS``)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.05
    item = rng.choice(n_items, n, p=pop / pop.sum()) + 1
    hist_len = rng.integers(0, HISTORY_LEN + 1, n)
    history = rng.choice(n_items, (n, HISTORY_LEN), p=pop / pop.sum()) + 1
    history[np.arange(HISTORY_LEN)[None, :] < (HISTORY_LEN - hist_len)[:, None]] = 0  # left pad
    return {
        "user": rng.integers(0, USER_BUCKETS, n),
        "history": history.astype(np.int64),
        "surface": rng.integers(0, SURFACE_BUCKETS, n),
        "hour": rng.integers(0, 24, n),
        "item": item.astype(np.int64),
        "category": rng.integers(1, n_categories + 1, n),
        "tags": rng.integers(0, n_tags + 1, (n, MAX_TAGS)),
        "log_age_days": rng.random(n).astype(np.float32) * 5,
    }


def item_feats(n_items: int, n_categories: int, n_tags: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "item": np.arange(1, n_items + 1, dtype=np.int64),
        "category": rng.integers(1, n_categories + 1, n_items),
        "tags": rng.integers(0, n_tags + 1, (n_items, MAX_TAGS)),
        "log_age_days": rng.random(n_items).astype(np.float32) * 5,
    }


def plain_loop(data: dict, cfg: dict, threads: int) -> list[float]:
    """examples/s per epoch of a single-process loop with the job's model, loss and optimiser."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    model = TwoTowerModel.from_config(cfg["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    log_q = torch.as_tensor(cfg["log_q"])
    tensors = {k: torch.as_tensor(v) for k, v in data.items()}
    n, b = len(data["item"]), cfg["batch_size"]
    rates, step = [], 0
    for epoch in range(cfg["epochs"]):
        perm = torch.as_tensor(np.random.default_rng(epoch).permutation(n))
        t0, seen = time.perf_counter(), 0
        for s in range(0, n - b + 1, b):
            idx = perm[s : s + b]
            batch = {k: v[idx] for k, v in tensors.items()}
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            q, i = model(batch)
            history = None if cfg["history_negatives"] else batch["history"]
            loss = sampled_softmax_loss(q, i, log_q[batch["item"]], temperature=cfg["temperature"], item_ids=batch["item"], history=history)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            seen += len(q)
        rates.append(seen / (time.perf_counter() - t0))
    return rates


def ray_train(data: dict, val: dict, cfg: dict, workers: int, storage: str) -> list[float]:
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from training.two_tower import train_loop

    train_ds = ray.data.from_arrow(_arrow(data))
    val_ds = ray.data.from_arrow(_arrow(val))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        datasets={"train": train_ds, "validation": val_ds},
        run_config=RunConfig(name=f"bench-w{workers}-{time.strftime('%H%M%S')}", storage_path=storage),
    )
    result = trainer.fit()
    print(f"ray_train_w{workers}: torch threads per worker = {result.metrics['torch_threads']}")
    return [float(x) for x in result.metrics_dataframe["examples_per_s"]]


def _arrow(d: dict):
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    return pa.table({k: ArrowTensorArray.from_numpy(v) if v.ndim > 1 else pa.array(v) for k, v in d.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--smoke", action="store_true", help="seconds-long run at toy size")
    a = p.parse_args()
    if a.smoke:
        a.examples, a.epochs, a.items, a.workers = 4096, 2, 500, [1]
    load_at_start = os.getloadavg()[0]
    n_categories, n_tags = 24, 64
    data = synthetic_examples(a.examples, a.items, n_categories, n_tags)
    val = synthetic_examples(1024, a.items, n_categories, n_tags, seed=1)
    job = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs/train/two_tower.yaml").read_text())
    keys = ("dim", "embed_dim", "hidden", "dropout", "temperature", "history_len", "long_history_len", "user_id")
    model = {k: job[k] for k in keys if k in job}
    cfg = {
        "model": {**model, "n_items": a.items, "n_categories": n_categories, "n_tags": n_tags},
        "seed": 0,
        "lr": job["lr"],
        "lr_schedule": job.get("lr_schedule", "constant"),
        "total_steps": a.epochs * (a.examples // a.batch_size),
        "history_negatives": job.get("history_negatives", True),
        "weight_decay": job["weight_decay"],
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "shuffle_buffer_rows": 16 * a.batch_size,
        "temperature": job["temperature"],
        "log_q": item_log_q(data["item"], a.items).tolist(),
        "items": item_feats(a.items, n_categories, n_tags),
    }
    best = lambda rates: max(rates[1:] or rates)  # noqa: E731  (first epoch = warm-up)
    runs: dict[str, dict] = {}
    cores = os.cpu_count() or 1
    for threads in sorted({1, cores}):
        rates = plain_loop(data, cfg, threads)
        runs[f"plain_{threads}thread"] = {"examples_per_s": best(rates), "epochs": rates}
    import ray

    ray.init(num_cpus=max(a.workers), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        for w in a.workers:
            rates = ray_train(data, val, cfg, w, storage)
            runs[f"ray_train_w{w}"] = {"examples_per_s": best(rates), "epochs": rates}
    ray.shutdown()
    base = runs["plain_1thread"]["examples_per_s"]
    for r in runs.values():
        r["vs_plain_1thread"] = r["examples_per_s"] / base
    result = {
        "examples": a.examples,
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "items": a.items,
        "cpu_count": cores,
        "load_avg_at_start": load_at_start,
        "smoke": a.smoke,
        "runs": runs,
    }
    out = OUT.with_name("bench_training_smoke.json") if a.smoke else OUT
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'run':<18}{'examples/s':>12}{'vs plain 1-thread':>20}")
    for name, r in runs.items():
        print(f"{name:<18}{r['examples_per_s']:>12.0f}{r['vs_plain_1thread']:>20.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
