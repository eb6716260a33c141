"""Item-embedding throughput: Ray Data ``map_batches`` with the item tower in an actor pool.

    python -m benchmarks.bench_embed --model-dir DIR [--items 1000000] [--concurrency 2]
        [--batch-size 4096] [--smoke]

The pipeline is the one ``training.build_index`` runs (:class:`training.build_index.ItemEmbedder`
actors, ``concurrency`` of them, 1 CPU each, over a Ray Dataset of item-tower features). The
catalogue is synthetic: ``--items`` rows whose item ids wrap around the trained model's id
table (``(i mod n_items) + 1``), so any trained item tower serves and the work per row is the
real one. Without ``--model-dir`` a freshly initialised tower with the job's dimensions is
used (the same compute). Also reports one process calling ``encode_items`` on the same rows,
for scale. Writes ``benchmarks/results/bench_embed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.catalogue import MAX_TAGS
from retrieval.two_tower import TwoTowerModel

OUT = Path(__file__).parent / "results" / "bench_embed.json"


def features(n: int, model: TwoTowerModel, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = model.cfg
    return {
        "item_id": np.char.add("i", np.arange(n).astype(str)).astype(object),
        "item": (np.arange(n) % max(1, c["n_items"])) + 1,
        "category": rng.integers(1, c["n_categories"] + 1, n),
        "tags": rng.integers(0, c["n_tags"] + 1, (n, MAX_TAGS)),
        "log_age_days": (rng.random(n) * 5).astype(np.float32),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", help="a two_tower artifact directory (model.pt + config.json)")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--smoke", action="store_true", help="seconds-long run at toy size")
    a = p.parse_args()
    if a.smoke:
        a.items = 20_000
    load_at_start = os.getloadavg()[0]
    import ray
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    from training.build_index import ItemEmbedder

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = a.model_dir
        if model_dir is None:
            model_dir = str(TwoTowerModel({"n_items": 5000, "n_categories": 24, "n_tags": 64}).save(tmp))
        model = TwoTowerModel.load(model_dir)
        f = features(a.items, model)

        t = time.perf_counter()
        model.encode_items(f, batch_size=a.batch_size)
        single_s = time.perf_counter() - t

        ray.init(num_cpus=max(2, a.concurrency), include_dashboard=False, log_to_driver=False)
        table = pa.table(
            {
                "item_id": pa.array(f["item_id"].tolist(), pa.string()),
                "item": f["item"],
                "category": f["category"],
                "tags": ArrowTensorArray.from_numpy(f["tags"]),
                "log_age_days": f["log_age_days"],
            }
        )
        ds = ray.data.from_arrow(table).repartition(max(4, a.items // (a.batch_size * 8)))
        ds = ds.materialize()  # the input sits in the object store, as a read would leave it
        t = time.perf_counter()
        out = ds.map_batches(
            ItemEmbedder,
            fn_constructor_kwargs={"model_dir": model_dir, "device": "cpu"},
            batch_size=a.batch_size,
            concurrency=a.concurrency,
            num_cpus=1,
            batch_format="numpy",
        )
        rows = sum(len(b["vector"]) for b in out.iter_batches(batch_size=None, batch_format="numpy"))
        ray_s = time.perf_counter() - t
        ray.shutdown()
    assert rows == a.items, (rows, a.items)
    result = {
        "items": a.items,
        "dim": model.cfg["dim"],
        "model_dir": a.model_dir or "untrained (job dimensions)",
        "concurrency": a.concurrency,
        "batch_size": a.batch_size,
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": load_at_start,
        "smoke": a.smoke,
        "ray_data_rows_per_s": rows / ray_s,
        "ray_data_seconds": ray_s,
        "single_process_rows_per_s": a.items / single_s,
        "single_process_torch_threads": __import__("torch").get_num_threads(),
    }
    path = OUT.with_name("bench_embed_smoke.json") if a.smoke else OUT
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"{'run':<34}{'rows/s':>12}{'seconds':>10}")
    print(f"{'ray data actor pool x' + str(a.concurrency):<34}{result['ray_data_rows_per_s']:>12.0f}{ray_s:>10.1f}")
    print(f"{'single process encode_items':<34}{result['single_process_rows_per_s']:>12.0f}{single_s:>10.1f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
