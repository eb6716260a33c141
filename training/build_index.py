"""Embed the catalogue with the trained item tower and build the ScaNN index; publish both.

    python -m training.build_index --config configs/train/build_index.yaml [--tenant T] [--smoke-test]

Item vectors come from a Ray Data ``map_batches`` over the catalogue with an actor pool
(:class:`ItemEmbedder` loads the model once per actor). Before publishing, the index's
recall@{10,100} against exact brute force is measured on the held-out validation queries and
written into the manifest; ``item_tower_version`` in the index names the two-tower version.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.catalogue import Catalogue
from core.features import item_features
from core.train_config import BuildIndexConfig
from retrieval.index import BruteForceIndex, ScannIndex
from retrieval.two_tower import TwoTowerModel
from training import common
from training.examples import two_tower_examples

QUERY_COLUMNS = ["user", "history", "surface", "hour"]


class ItemEmbedder:
    """Ray Data callable class: item-tower features batch -> ``item_id`` + ``vector`` (B, D)."""

    def __init__(self, model_dir: str, device: str = "auto"):
        self.model = TwoTowerModel.load(model_dir, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.model.encode_items(batch)
        return {"item_id": batch["item_id"], "vector": vectors}


def catalogue_dataset(catalogue: Catalogue, now: float):
    """The catalogue's item-tower features as a Ray Dataset (``tags`` as a tensor column)."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    f = item_features(catalogue, now)
    table = pa.table(
        {
            "item_id": pa.array(catalogue.item_ids.tolist(), pa.string()),
            "item": f["item"],
            "category": f["category"],
            "tags": ArrowTensorArray.from_numpy(f["tags"]),
            "log_age_days": f["log_age_days"],
        }
    )
    return ray.data.from_arrow(table)


def embed_catalogue(catalogue: Catalogue, model_dir: Path, cfg: BuildIndexConfig, now: float):
    """``(item_ids (N,), vectors (N, D) float32)`` in catalogue order."""
    ds = catalogue_dataset(catalogue, now).map_batches(
        ItemEmbedder,
        fn_constructor_kwargs={"model_dir": str(model_dir), "device": cfg.device},
        batch_size=cfg.batch_size,
        concurrency=cfg.embed_concurrency,
        batch_format="numpy",
    )
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    ids = np.concatenate([p["item_id"] for p in parts]).astype(object)
    vecs = np.concatenate([p["vector"] for p in parts]).astype(np.float32)
    order = catalogue.index_of(ids.tolist())
    out_ids = np.empty(len(catalogue), dtype=object)
    out_vecs = np.zeros((len(catalogue), vecs.shape[1]), dtype=np.float32)
    out_ids[order], out_vecs[order] = ids, vecs
    return out_ids, out_vecs


def recall_at(exact_rows: np.ndarray, approx_rows: np.ndarray, k: int) -> float:
    return float(
        np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(exact_rows, approx_rows, strict=True)])
    )


def validation_queries(ex_dir: Path, model: TwoTowerModel, limit: int) -> np.ndarray:
    import ray.data

    ds = ray.data.read_parquet(str(ex_dir)).filter(expr="split == 'validation'").select_columns(QUERY_COLUMNS)
    rows = ds.limit(limit).to_numpy_refs()
    import ray

    batches = [b for b in ray.get(rows) if len(b["user"])]
    if not batches:
        return np.zeros((0, model.cfg["dim"]), dtype=np.float32)
    batch = {k: np.concatenate([b[k] for b in batches]) for k in QUERY_COLUMNS}
    return model.encode_queries(batch)


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], "configs/train/build_index.yaml", argv)
    cfg = common.load_job_config(args, BuildIndexConfig)
    common.init_ray()
    t0 = time.perf_counter()
    storage = common.JobStorage(cfg)
    registry = storage.registry()
    tt_version = registry.resolve("two_tower", cfg.tenant, cfg.two_tower_alias)
    if tt_version is None:
        raise SystemExit(f"no two_tower {cfg.two_tower_alias!r} version for tenant {cfg.tenant}; train one first")
    model_dir = registry.local_path("two_tower", cfg.tenant, tt_version)
    catalogue = storage.catalogue()
    now = float(np.nanmax(catalogue.created_at))
    ids, vecs = embed_catalogue(catalogue, model_dir, cfg, now)
    t_embed = time.perf_counter() - t0

    owner = common.owner(cfg)
    with tempfile.TemporaryDirectory() as emb_dir:
        table = pa.table(
            {
                "item_id": pa.array(ids.tolist(), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1]),
            }
        )
        pq.write_table(table, Path(emb_dir) / "embeddings.parquet")
        emb = registry.publish(
            "item_embeddings",
            cfg.tenant,
            emb_dir,
            owner=owner,
            lineage=common.lineage(storage, {"two_tower": tt_version}),
            metrics={"items": len(ids), "dim": int(vecs.shape[1]), "embed_seconds": t_embed},
            config={"item_tower_version": tt_version, "features_at": now},
            description=f"item vectors of two_tower {tt_version}",
        )

    t1 = time.perf_counter()
    settings = {k: v for k, v in cfg.scann.model_dump().items() if v is not None}
    index = ScannIndex.build(vecs, ids, settings, item_tower_version=tt_version)
    build_s = time.perf_counter() - t1
    model = TwoTowerModel.load(model_dir)
    queries = validation_queries(two_tower_examples(storage, cfg.num_partitions), model, cfg.recall_queries)
    exact = BruteForceIndex(vecs, ids)
    metrics: dict = {"items": len(ids), "build_seconds": build_s, "validation_queries": len(queries)}
    if len(queries):
        k = min(100, len(ids))
        exact_rows = exact.search(queries, k)[1]
        approx_rows = index.search(queries, k)[1]
        metrics["recall@10"] = recall_at(exact_rows, approx_rows, min(10, k))
        metrics["recall@100"] = recall_at(exact_rows, approx_rows, k)
    with tempfile.TemporaryDirectory() as idx_dir:
        index.save(idx_dir)
        ann = registry.publish(
            "ann_index",
            cfg.tenant,
            idx_dir,
            owner=owner,
            lineage=common.lineage(storage, {"two_tower": tt_version, "item_embeddings": emb.version}),
            metrics=metrics,
            config={"item_tower_version": tt_version, "type": index.type, "settings": index.settings},
            description=f"ScaNN over item_embeddings {emb.version}",
        )
    common.summary_table(
        f"build_index {cfg.tenant}",
        {
            "two_tower": tt_version,
            "item_embeddings": emb.version,
            "ann_index": ann.version,
            **metrics,
            "embed_seconds": t_embed,
            "seconds": time.perf_counter() - t0,
        },
    )
    print(f"published ann_index {cfg.tenant} {ann.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
