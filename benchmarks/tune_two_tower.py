"""Validation grid for the two-tower settings: in-process runs, many at once, CPU or GPU.

    python -m benchmarks.tune_two_tower --examples DIR --data DIR [--tenant acme]
        --grid GRID.json [--workers 8] [--out FILE.jsonl]

``--examples`` is a two-tower examples directory written by ``training.datasets`` (under
``<work_dir>/<tenant>/examples/two_tower/``), ``--data`` the data root holding the catalogue.
``GRID.json`` is a list of overrides, e.g. ``[{"seed": 0}, {"seed": 0, "temperature": 0.1}]``:
model settings (``dim``, ``embed_dim``, ``hidden``, ``dropout``, ``temperature``,
``history_len``, ``long_history_len``, ``user_id``, ...) and
``seed``, ``lr``, ``lr_schedule``, ``batch_size``, ``epochs``, ``weight_decay``,
``log_q_strength``, ``history_negatives``, ``gap_validation`` (:func:`gap_split`); unset ones
take the defaults below (the settings
before the 2026-11-22 retuning). Each run trains on the train split with a full random
permutation per epoch (the loss, model and schedule are the job's: ``retrieval.losses``,
``retrieval.two_tower``, ``training.worker.learning_rate``), scores every epoch on the
protocol's validation task (full catalogue, train items excluded) and keeps the best epoch's
validation and test metrics (test: protocol v3, train and validation items excluded). Choose
settings on validation; test is reported for the chosen one. Runs go to ``--workers`` processes
(on a GPU they share it). Writes one JSON line per run and prints the settings ranked by mean
validation NDCG@10 over their seeds. A tuning tool, not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

DEFAULTS = {"seed": 0, "lr": 2e-3, "lr_schedule": "constant", "batch_size": 512, "epochs": 8,
            "weight_decay": 0.0, "log_q_strength": 1.25, "history_negatives": True, "gap_validation": False}  # fmt: skip
MODEL = {"dim": 64, "embed_dim": 64, "hidden": 128, "dropout": 0.0, "temperature": 0.05, "history_len": 20,
         "long_history_len": 0, "user_id": True}  # fmt: skip
COLUMNS = ["user", "history", "surface", "hour", "item", "category", "tags", "log_age_days"]


def gap_split(split: np.ndarray, users: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """``gap_validation``: each validation user's last train interaction becomes ``"gap"``: out of
    training, but in the validation query's history (its point-in-time features hold it). A
    validation query then comes one unseen interaction after the user's last training example,
    as a test query does (the validation item) and as a serving query does (everything since
    the model was trained); the plain task favours a per-user id embedding, which was fit on
    that user's examples right up to the validation interaction (docs/evaluation.md)."""
    out = split.copy()
    train = np.flatnonzero(split == "train")
    has_validation = np.isin(users[train], users[split == "validation"])
    rows = train[has_validation]
    rows = rows[np.lexsort((ts[rows], users[rows]))]  # by user, then time
    last = np.append(users[rows][1:] != users[rows][:-1], True)
    out[rows[last]] = "gap"
    return out


def run(examples: str, data_root: str, tenant: str, override: dict) -> dict:
    import pyarrow.parquet as pq
    import torch

    from core.catalogue import Catalogue
    from core.device import resolve_device
    from retrieval.losses import item_log_q, sampled_softmax_loss
    from retrieval.similarity import similarity_item_features
    from retrieval.two_tower import TwoTowerModel
    from training.metrics import ranking_metrics
    from training.worker import learning_rate

    unknown = set(override) - set(DEFAULTS) - set(MODEL) - {"user_dropout"}
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    s = {**DEFAULTS, **MODEL, **override}
    dev = resolve_device("auto")
    t = pq.read_table(examples)
    data = {c: (np.stack(v) if (v := t[c].to_numpy()).dtype == object else v) for c in COLUMNS}
    split, users = np.array(t["split"].to_pylist()), np.array(t["user_id"].to_pylist())
    if s["gap_validation"]:
        split = gap_split(split, users, t["ts"].to_numpy())
    catalogue = Catalogue.load(data_root, tenant)
    n_items = len(catalogue)
    feats = similarity_item_features(catalogue)
    tr = split == "train"
    torch.manual_seed(s["seed"])
    model = TwoTowerModel({**{k: s[k] for k in MODEL}, "user_dropout": s.get("user_dropout", 0.0), "n_items": n_items,
                           "n_categories": len(catalogue.categories), "n_tags": len(catalogue.tag_vocab)}).to(dev)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    n, bs = int(tr.sum()), s["batch_size"]
    schedule = {"lr": s["lr"], "lr_schedule": s["lr_schedule"], "total_steps": s["epochs"] * (n // bs)}
    log_q = torch.as_tensor(item_log_q(data["item"][tr], n_items, strength=s["log_q_strength"]), device=dev)
    train = {c: torch.as_tensor(data[c][tr], device=dev) for c in COLUMNS}

    def task(name: str, earlier: tuple[str, ...]):
        rows = np.flatnonzero((split == name) & (data["item"] > 0))
        known = np.isin(split, earlier) & (data["item"] > 0)
        mask = torch.zeros((len(rows), n_items), dtype=torch.bool, device=dev)
        by_user: dict[str, list[int]] = {}
        for u, i in zip(users[known], data["item"][known] - 1, strict=True):
            by_user.setdefault(u, []).append(int(i))
        for r, u in enumerate(users[rows]):
            if by_user.get(u):
                mask[r, torch.as_tensor(by_user[u], device=dev)] = True
        return rows, mask, [[int(data["item"][r] - 1)] for r in rows]

    tasks = {"validation": task("validation", ("train", "gap")), "test": task("test", ("train", "gap", "validation"))}

    def evaluate(name: str) -> dict:
        rows, mask, relevant = tasks[name]
        items = torch.as_tensor(model.encode_items(feats), device=dev)
        q = torch.as_tensor(model.encode_queries({c: data[c][rows] for c in COLUMNS[:4]}), device=dev)
        top = torch.topk((q @ items.T).masked_fill(mask, float("-inf")), 50, dim=1).indices.cpu().numpy()
        m = ranking_metrics(top, relevant, n_items)
        return {k: round(float(m[k]), 4) for k in ("ndcg@10", "hr@10", "recall@50")}

    best, curve, step, t0 = None, [], 0, time.perf_counter()
    for epoch in range(s["epochs"]):
        model.train()
        perm = torch.randperm(n, device=dev)
        for lo in range(0, n - bs + 1, bs):
            batch = {c: v[perm[lo : lo + bs]] for c, v in train.items()}
            for group in opt.param_groups:
                group["lr"] = learning_rate(schedule, step)
            q, i = model(batch)
            loss = sampled_softmax_loss(q, i, log_q[batch["item"]], temperature=s["temperature"], item_ids=batch["item"],
                                        history=None if s["history_negatives"] else batch["history"])  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        val = evaluate("validation")
        curve.append(val["ndcg@10"])
        if best is None or val["ndcg@10"] > best["validation"]["ndcg@10"]:
            best = {"epoch": epoch, "validation": val, "test": evaluate("test")}
    return {"settings": override, **best, "val_ndcg@10_by_epoch": curve, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--tenant", default="acme")
    p.add_argument("--grid", required=True, help="JSON file: a list of setting overrides")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="tune_two_tower.jsonl")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a worker: a JSON list of overrides
    a = p.parse_args(argv)
    if a.one is not None:
        for override in json.loads(a.one):
            print(json.dumps(run(a.examples, a.data, a.tenant, override)), flush=True)
        return 0
    try:
        grid = json.loads(open(a.grid).read())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{a.grid}: {e}") from None
    base = [sys.executable, "-m", "benchmarks.tune_two_tower", "--examples", a.examples, "--data", a.data, "--tenant", a.tenant, "--grid", a.grid]
    procs = [subprocess.Popen([*base, "--one", json.dumps(grid[k :: a.workers])], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "2"}) for k in range(min(a.workers, len(grid)))]  # fmt: skip
    rows = []
    with open(a.out, "w") as f:
        for proc in procs:
            for line in proc.stdout:
                f.write(line)
                rows.append(json.loads(line))
                print(f"{len(rows)}/{len(grid)} runs", file=sys.stderr, flush=True)
            if proc.wait() != 0:
                raise SystemExit(f"a worker failed (exit {proc.returncode})")
    by_setting: dict[str, list[dict]] = {}
    for r in rows:
        key = json.dumps({k: v for k, v in r["settings"].items() if k != "seed"}, sort_keys=True)
        by_setting.setdefault(key, []).append(r)
    ranked = sorted(by_setting.items(), key=lambda kv: -np.mean([r["validation"]["ndcg@10"] for r in kv[1]]))
    for key, rs in ranked:
        val, test = (np.mean([r[x]["ndcg@10"] for r in rs]) for x in ("validation", "test"))
        print(f"validation NDCG@10 {val:.4f}  test {test:.4f}  seeds {len(rs)}  best epochs {[r['epoch'] for r in rs]}  {key}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
