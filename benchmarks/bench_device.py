"""Model compute on CPU and GPU: what ``device: cuda`` buys the ranker and the two-tower.

    python -m benchmarks.bench_device [--devices cpu,cuda] [--rows 500] [--items 100000]
        [--batch-sizes 1,2,4,8,16,32,64] [--seconds 1.0] [--out FILE]

Three measurements per device, each with the model at its ``configs/train/*.yaml`` size and
freshly initialised weights (the work per row does not depend on the weights):

* **ranker batching** — what ``@serve.batch`` amortises in a Ranker replica: ``size`` requests
  of ``--rows`` candidates each, stacked, through :meth:`MultiTaskRanker.predict` (numpy in,
  host→device copy, forward, device→host copy, calibration: the replica's whole model call).
  Reports ms per request and requests/s per batch size, and the best rate over batch size 1.
* **two-tower training step** — forward, in-batch sampled softmax with log-Q, backward and
  AdamW step at the job's batch size; examples/s.
* **item embedding** — :meth:`TwoTowerModel.encode_items` over ``--items`` items; rows/s.

CPU runs use one torch thread (a replica or a training worker with one CPU). Inputs are
synthetic (ids within the tables). Writes JSON (default ``benchmarks/results/bench_device.json``)
and prints a table. Not in the test suite: it needs a quiet machine and, for ``cuda``, a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from core.catalogue import MAX_TAGS
from core.device import resolve_device
from core.features import CAT_FEATURES, DENSE_FEATURES, HISTORY_LEN
from ranking.model import MultiTaskRanker, cat_cardinalities
from retrieval.losses import sampled_softmax_loss
from retrieval.two_tower import TwoTowerModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "bench_device.json"
N_CATEGORIES, N_TAGS = 40, 320


def _train_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / "train" / f"{name}.yaml").read_text())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, seconds: float, device: torch.device, warmup: int = 3) -> float:
    """Mean seconds per call of ``fn`` over at least ``seconds`` (and at least 3 calls)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    _sync(device)
    return (time.perf_counter() - t0) / calls


def ranker_batching(device: torch.device, n_items: int, rows: int, sizes: list[int], seconds: float) -> dict:
    y = _train_yaml("ranker")
    cfg = {k: y[k] for k in ("tasks", "embed_dim", "n_experts", "expert_hidden", "tower_hidden")}
    model = MultiTaskRanker({**cfg, "n_items": n_items, "n_categories": N_CATEGORIES}).to(device).eval()
    rng = np.random.default_rng(0)
    card = np.array(cat_cardinalities(model.cfg))
    out = []
    for size in sizes:
        n = size * rows
        cat = (rng.random((n, len(CAT_FEATURES))) * card).astype(np.int64)
        dense = rng.standard_normal((n, len(DENSE_FEATURES))).astype(np.float32)
        per_call = _timed(lambda c=cat, d=dense: model.predict(c, d), seconds, device)
        out.append({"batch_size": size, "rows": n, "ms_per_request": round(per_call * 1e3 / size, 4),
                    "requests_per_s": round(size / per_call, 1)})  # fmt: skip
    base = out[0]["requests_per_s"]
    best = max(out, key=lambda r: r["requests_per_s"])
    return {"rows_per_request": rows, "sweep": out, "best_batch_size": best["batch_size"],
            "speedup_vs_batch_1": round(best["requests_per_s"] / base, 2)}  # fmt: skip


def _two_tower(device: torch.device, n_items: int) -> TwoTowerModel:
    y = _train_yaml("two_tower")
    cfg = {k: y[k] for k in ("dim", "embed_dim", "hidden", "dropout", "temperature")}
    cfg.update(n_items=n_items, n_categories=N_CATEGORIES, n_tags=N_TAGS)
    return TwoTowerModel(cfg).to(device)


def two_tower_training(device: torch.device, n_items: int, seconds: float) -> dict:
    y = _train_yaml("two_tower")
    bs = int(y["batch_size"])
    model = _two_tower(device, n_items).train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(y["lr"]))
    g = torch.Generator().manual_seed(0)

    def ids(high, shape):
        return torch.randint(0, high, shape, generator=g).to(device)

    batch = {
        "user": ids(model.cfg["user_buckets"], (bs,)),
        "history": ids(n_items + 1, (bs, HISTORY_LEN)),
        "surface": ids(model.cfg["surface_buckets"], (bs,)),
        "hour": ids(24, (bs,)),
        "item": ids(n_items, (bs,)) + 1,
        "category": ids(N_CATEGORIES, (bs,)) + 1,
        "tags": ids(N_TAGS + 1, (bs, MAX_TAGS)),
        "log_age_days": torch.rand(bs, generator=g).to(device),
    }
    log_q = torch.log(torch.rand(n_items + 1, generator=g) + 1e-3).to(device)

    def step():
        q, i = model(batch)
        loss = sampled_softmax_loss(q, i, log_q[batch["item"]], temperature=model.cfg["temperature"], item_ids=batch["item"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    per_step = _timed(step, seconds, device)
    return {"batch_size": bs, "examples_per_s": round(bs / per_step, 1), "ms_per_step": round(per_step * 1e3, 3)}


def item_embedding(device: torch.device, n_items: int, seconds: float) -> dict:
    model = _two_tower(device, n_items).eval()
    rng = np.random.default_rng(0)
    feats = {
        "item": np.arange(1, n_items + 1),
        "category": rng.integers(1, N_CATEGORIES + 1, n_items),
        "tags": rng.integers(0, N_TAGS + 1, (n_items, MAX_TAGS)),
        "log_age_days": (rng.random(n_items) * 5).astype(np.float32),
    }
    per_call = _timed(lambda: model.encode_items(feats), seconds, device, warmup=1)
    return {"items": n_items, "rows_per_s": round(n_items / per_call, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped without a GPU")
    p.add_argument("--rows", type=int, default=500, help="candidates ranked per request")
    p.add_argument("--items", type=int, default=100_000, help="catalogue size (embedding tables)")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per measurement")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.batch_sizes.split(",")]
    result: dict = {"command": "python -m benchmarks.bench_device " + " ".join(argv or []),
                    "host": platform.node(), "torch": torch.__version__, "devices": {}}  # fmt: skip
    for name in a.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: skipped (torch sees no GPU)")
            continue
        device = resolve_device(name)
        if device.type == "cpu":
            torch.set_num_threads(1)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}), 1 thread"
        print(f"{name}: {label}", flush=True)
        r = {"device": label,
             "ranker_batching": ranker_batching(device, a.items, a.rows, sizes, a.seconds),
             "two_tower_training": two_tower_training(device, 5_000, a.seconds),
             "item_embedding": item_embedding(device, a.items, a.seconds)}  # fmt: skip
        result["devices"][name] = r
        for row in r["ranker_batching"]["sweep"]:
            print(f"  ranker batch {row['batch_size']:>3}: {row['ms_per_request']:8.3f} ms/request  {row['requests_per_s']:>10} requests/s", flush=True)
        print(f"  ranker batching speedup: {r['ranker_batching']['speedup_vs_batch_1']}x (batch {r['ranker_batching']['best_batch_size']})")
        print(f"  two-tower training: {r['two_tower_training']['examples_per_s']} examples/s")
        print(f"  item embedding: {r['item_embedding']['rows_per_s']} rows/s", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
