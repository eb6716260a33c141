"""ScaNN vs exact brute force on a random clustered catalogue, single thread.

    python -m benchmarks.bench_index [--n 1000000] [--dim 64] [--queries 1000] [--smoke]

Reports build seconds (and per million items), and queries/s of each index; ScaNN's
``num_leaves_to_search`` is the smallest of a sweep reaching recall@10 >= 0.9 vs exact.
Writes ``benchmarks/results/bench_index.json`` (``bench_index_smoke.json`` with ``--smoke``, a
seconds-long run on 20k items).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-thread comparison
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from retrieval.index import BruteForceIndex, ScannIndex  # noqa: E402


def clustered(n: int, d: int, rng, centres: int = 1000) -> np.ndarray:
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def qps(index, q: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    rows = np.concatenate([index.search(q[s : s + 100], k)[1] for s in range(0, len(q), 100)])
    return len(q) / (time.perf_counter() - t), rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--smoke", action="store_true", help="seconds-long run at toy size")
    a = p.parse_args()
    if a.smoke:
        a.n, a.queries = 20_000, 200
    rng = np.random.default_rng(0)
    x = clustered(a.n, a.dim, rng)
    q = clustered(a.queries, a.dim, rng)
    ids = np.arange(a.n).astype(str)
    exact = BruteForceIndex(x, ids)
    exact_qps, exact_rows = qps(exact, q[: max(100, a.queries // 5)], a.k)
    exact_rows = exact.search(q, a.k)[1]
    t = time.perf_counter()
    index = ScannIndex.build(x, ids, {"reorder_k": 200}, training_threads=1)
    build_s = time.perf_counter() - t
    leaves = index.settings["num_leaves"]
    sweep = []
    for frac in (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5):
        index.settings["num_leaves_to_search"] = max(1, int(leaves * frac))
        s_qps, rows = qps(index, q, a.k)
        recall = float(np.mean([len(set(r) & set(e)) / a.k for r, e in zip(rows, exact_rows, strict=True)]))
        sweep.append({"leaves_to_search": index.settings["num_leaves_to_search"], "qps": s_qps, "recall@10": recall})
        if recall >= 0.9:
            break
    best = next((s for s in sweep if s["recall@10"] >= 0.9), sweep[-1])
    result = {
        "n": a.n,
        "dim": a.dim,
        "queries": a.queries,
        "threads": 1,
        "build_seconds": build_s,
        "build_seconds_per_million": build_s / (a.n / 1e6),
        "scann_settings": {**index.settings, "num_leaves_to_search": best["leaves_to_search"]},
        "brute_force_qps": exact_qps,
        "scann_qps_at_recall": best["qps"],
        "scann_recall@10": best["recall@10"],
        "speedup": best["qps"] / exact_qps,
        "sweep": sweep,
    }
    result["smoke"] = a.smoke
    result["load_avg_at_end"] = os.getloadavg()[0]
    out = Path(__file__).parent / "results" / ("bench_index_smoke.json" if a.smoke else "bench_index.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'index':<22}{'queries/s':>12}{'recall@10':>11}   build {build_s:.1f} s, n={a.n}, dim={a.dim}, 1 thread")
    print(f"{'brute force':<22}{exact_qps:>12.0f}{1.0:>11.3f}")
    for s in sweep:
        print(f"{'scann leaves=' + str(s['leaves_to_search']):<22}{s['qps']:>12.0f}{s['recall@10']:>11.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
