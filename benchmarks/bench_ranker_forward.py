"""Model inference per call: the ranker's serving path and the two-tower query tower's, each
against the training-form ``forward`` it replaces, side by side in one process.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_ranker_forward [--rounds 5] [--seconds 1.0]
        [--ranker DIR] [--two-tower DIR] [--out FILE]

* **ranker** — :meth:`MultiTaskRanker.logits` (the forward pass: numpy in, guards, model,
  numpy out) and :meth:`MultiTaskRanker.predict` (plus calibration) at ``B = 500`` (one
  request's candidates) and ``B = 128,000`` (batch scoring: 256 users × 500), uncompiled
  (``forward``, the code before ``ServingRanker``) and compiled (``compile_for_serving``).
* **query tower** — :meth:`TwoTowerModel.encode_queries` at ``B = 1`` (one request) and
  ``B = 256`` (a batch of users), ``query_tower`` vs ``ServingQueryTower``.

Models: the saved ones given (``--ranker`` / ``--two-tower`` directories, e.g. the serving
benchmark's registry), else fresh weights at the benchmark catalogue's sizes (100k items; the
work per row does not depend on the weights). One torch thread. Old and new alternate
``--rounds`` times on the same inputs; each figure is CPU time per call
(``time.process_time``), the median over rounds, with the 1-minute load average at the time.
Also records the largest difference of the answers (old vs new) and the compiled tables'
memory. Writes JSON (default ``benchmarks/results/bench_ranker_forward.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ranking.model import MultiTaskRanker
from retrieval.two_tower import TwoTowerModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "bench_ranker_forward.json"
N_ITEMS, N_CATEGORIES = 100_000, 24


def _cpu_ms(fn, seconds: float) -> float:
    """CPU ms per call of ``fn`` over at least ``seconds`` of CPU (and at least 2 calls)."""
    fn()
    calls, c0 = 0, time.process_time()
    while calls < 2 or time.process_time() - c0 < seconds:
        fn()
        calls += 1
    return (time.process_time() - c0) * 1e3 / calls


def _ranker(path: str | None) -> MultiTaskRanker:
    if path:
        return MultiTaskRanker.load(path)
    torch.manual_seed(0)
    return MultiTaskRanker({"n_items": N_ITEMS, "n_categories": N_CATEGORIES}).eval().compile_for_serving()


def _two_tower(path: str | None) -> TwoTowerModel:
    if path:
        return TwoTowerModel.load(path)
    torch.manual_seed(0)
    model = TwoTowerModel({"n_items": N_ITEMS, "n_categories": N_CATEGORIES, "n_tags": 192,
                           "embed_dim": 128, "hidden": 256})  # fmt: skip
    with torch.no_grad():
        model.attn_query.normal_()
    return model.eval().compile_for_serving()


def _ranker_inputs(b: int, model: MultiTaskRanker, rng) -> tuple[np.ndarray, np.ndarray]:
    n_items = model.cfg["n_items"]
    users = np.repeat(rng.integers(0, 1 << 16, max(1, b // 500)), 500)[:b]  # a user per 500 rows
    cat = np.stack([users, rng.integers(0, n_items + 2, b), rng.integers(0, model.cfg["n_categories"] + 1, b),
                    rng.integers(0, 8, b), np.full(b, 3), np.full(b, 12)], axis=1)  # fmt: skip
    dense = rng.normal(size=(b, 8)).astype(np.float32)
    dense[rng.random(b) < 0.3, 4] = np.nan  # no two-tower score
    return cat, dense


def _query_inputs(b: int, model: TwoTowerModel, rng) -> dict[str, np.ndarray]:
    hist = rng.integers(1, model.cfg["n_items"] + 1, (b, 100))
    hist[:, : rng.integers(50, 100)] = 0  # left padded
    return {"user": rng.integers(0, 1 << 16, b), "history": hist,
            "surface": rng.integers(0, 16, b), "hour": rng.integers(0, 24, b)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--ranker", default=None)
    p.add_argument("--two-tower", default=None)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ranker, tower = _ranker(a.ranker), _two_tower(a.two_tower)
    compiled_ranker, compiled_tower = ranker._serving, tower._serving

    rows = ranker._serving_rows
    cases = []
    for b in (500, 128_000):
        cat, dense = _ranker_inputs(b, ranker, rng)
        for call in ("logits", "predict"):
            cases.append((f"ranker.{call} B={b}", getattr(ranker, call), (cat, dense), "ranker"))
    for b in (1, 256):
        cases.append((f"query_tower B={b}", tower.encode_queries, (_query_inputs(b, tower, rng),), "tower"))

    results = []
    for name, fn, args, kind in cases:
        seconds = a.seconds if "128000" not in name else max(a.seconds, 3.0)
        figures: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        answers = {}
        for _ in range(a.rounds):
            for label in ("old", "new"):
                if kind == "ranker":
                    ranker._serving, ranker._serving_rows = (compiled_ranker, rows) if label == "new" else (None, None)
                else:
                    tower._serving, tower._compiled = (compiled_tower, True) if label == "new" else (None, False)
                answers[label] = fn(*args)
                figures[label].append((_cpu_ms(lambda fn=fn, args=args: fn(*args), seconds), os.getloadavg()[0]))
        if kind == "ranker":
            diff = max(float(np.nanmax(np.abs(answers["new"][t] - answers["old"][t]))) for t in answers["old"])
        else:
            diff = float(np.abs(answers["new"] - answers["old"]).max())
        row = {"case": name, "max_abs_diff": diff}
        for label, fig in figures.items():
            row[f"{label}_cpu_ms"] = round(statistics.median(f[0] for f in fig), 4)
            row[f"{label}_load1"] = [round(f[1], 2) for f in fig]
        row["speedup"] = round(row["old_cpu_ms"] / row["new_cpu_ms"], 2)
        results.append(row)
        print(f"{name:28s} old {row['old_cpu_ms']:9.3f} ms  new {row['new_cpu_ms']:9.3f} ms  "
              f"×{row['speedup']:<5}  max|Δ| {diff:.2e}  load {row['new_load1']}", flush=True)  # fmt: skip
    ranker._serving, ranker._serving_rows = compiled_ranker, rows
    out = {
        "benchmark": "bench_ranker_forward",
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "rounds": a.rounds,
        "ranker": a.ranker or f"fresh weights, {N_ITEMS} items",
        "two_tower": a.two_tower or f"fresh weights, {N_ITEMS} items",
        "ranker_tables_mb": round(compiled_ranker.nbytes() / 1e6, 1),
        "results": results,
    }  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
