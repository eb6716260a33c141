"""Top-k maximum-inner-product indexes over item vectors: one interface, two implementations.

:class:`BruteForceIndex` is the exact oracle (chunked numpy matmul); :class:`ScannIndex` is the
serving index (ScaNN tree partitioning + asymmetric hashing + exact reorder). Both answer
``search(queries (B, D) float32, k) -> (scores (B, k) float32, rows (B, k) int64)`` with rows
sorted by descending score; ``item_ids[rows]`` maps rows to item ids.

On disk (``save(dir)`` / :func:`load_index`): ``index.json`` (``type``, ``dim``, ``n``,
``settings``, ``item_tower_version``), ``item_ids.json`` (row -> item id), and the vectors
(``vectors.npy``) or the ScaNN assets (``scann/``, serialised with relative paths so the
directory can be copied into the registry and out to replicas).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_ROWS = 262_144


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be (B, {dim}), got {q.shape}")
    return q


class TopKIndex:
    """Interface shared by every index."""

    type: str = ""

    def __init__(self, item_ids: np.ndarray, dim: int, item_tower_version: str | None = None):
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.dim = int(dim)
        self.item_tower_version = item_tower_version
        self.settings: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.item_ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _write_meta(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "type": self.type,
            "dim": self.dim,
            "n": len(self),
            "settings": self.settings,
            "item_tower_version": self.item_tower_version,
        }
        (directory / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        (directory / "item_ids.json").write_text(json.dumps(self.item_ids.tolist()))

    def save(self, directory: str | Path) -> Path:
        raise NotImplementedError


class BruteForceIndex(TopKIndex):
    """Exact top-k by full dot product, ``CHUNK_ROWS`` items at a time to bound memory."""

    type = "brute_force"

    def __init__(
        self, vectors: np.ndarray, item_ids: np.ndarray, item_tower_version: str | None = None
    ):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        super().__init__(item_ids, vectors.shape[1], item_tower_version)
        if len(vectors) != len(self.item_ids):
            raise ValueError("vectors and item_ids differ in length")
        self.vectors = vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_queries(queries, self.dim)
        k = min(k, len(self))
        best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_r = np.zeros((len(q), 0), dtype=np.int64)
        for start in range(0, len(self), CHUNK_ROWS):
            scores = q @ self.vectors[start : start + CHUNK_ROWS].T
            kk = min(k, scores.shape[1])
            part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            best_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
            best_r = np.concatenate([best_r, part.astype(np.int64) + start], axis=1)
            if best_s.shape[1] > k:
                keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                best_s = np.take_along_axis(best_s, keep, 1)
                best_r = np.take_along_axis(best_r, keep, 1)
        # Ties break on the lower row so results are deterministic.
        order = np.lexsort((best_r, -best_s), axis=1)
        return (
            np.take_along_axis(best_s, order, 1).astype(np.float32),
            np.take_along_axis(best_r, order, 1),
        )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self._write_meta(directory)
        np.save(directory / "vectors.npy", self.vectors)
        return directory


def default_scann_settings(n: int, k: int = 100) -> dict[str, Any]:
    """ScaNN settings sized to an ``n``-item catalogue: ~sqrt(n) leaves, search ~10% of them
    (more for small trees, where one leaf holds a large share of the items)."""
    if n < 2_000:
        # Too few items to train partitions and codebooks; exact scoring is cheap here.
        return {"num_leaves": 0, "num_leaves_to_search": 0, "dims_per_block": 0, "reorder_k": 0}
    leaves = max(2, int(round(math.sqrt(n))))
    return {
        "num_leaves": leaves,
        # Search at least ~5,000 items' worth of leaves: on small trees 10% of the leaves is
        # too few, because a query's neighbours straddle several partitions. Query vectors sit
        # farther from the item partitions' centres than items do: on `small` (5,000 items, 71
        # leaves) one two-tower kept recall@100 0.95 searching 43 leaves, 0.986 at 55, 0.9998
        # at all 71 (the reorder depth and the hashing did not matter).
        "num_leaves_to_search": min(leaves, max(int(math.ceil(leaves * 0.1)), int(math.ceil(leaves * 5_000 / n)))),
        "training_sample_size": min(n, 250_000),
        "dims_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "reorder_k": max(4 * k, 250),
    }


class ScannIndex(TopKIndex):
    """ScaNN dot-product index. ``settings`` override :func:`default_scann_settings`."""

    type = "scann"

    def __init__(self, searcher, item_ids, dim, settings, item_tower_version=None):
        super().__init__(item_ids, dim, item_tower_version)
        self.searcher = searcher
        self.settings = dict(settings)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        item_ids: np.ndarray,
        settings: dict[str, Any] | None = None,
        *,
        item_tower_version: str | None = None,
        training_threads: int = 0,
    ) -> ScannIndex:
        """Build from ``(N, D)`` vectors; ``training_threads`` 0 = ScaNN's default."""
        from scann.scann_ops.py import scann_ops_pybind

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        s = {**default_scann_settings(n), **{k: v for k, v in (settings or {}).items() if v is not None}}
        builder = scann_ops_pybind.builder(vectors, 10, "dot_product")
        if training_threads:
            builder.set_n_training_threads(training_threads)
        if s["num_leaves"] and s["num_leaves"] > 1:
            builder = builder.tree(
                num_leaves=int(s["num_leaves"]),
                num_leaves_to_search=int(s["num_leaves_to_search"]),
                training_sample_size=int(min(n, s.get("training_sample_size", n))),
            )
        if s["dims_per_block"]:
            builder = builder.score_ah(
                int(s["dims_per_block"]),
                anisotropic_quantization_threshold=float(s["anisotropic_quantization_threshold"]),
                training_sample_size=int(min(n, s.get("training_sample_size", n))),
            )
            builder = builder.reorder(int(s["reorder_k"]))
        else:
            builder = builder.score_brute_force()
        return cls(builder.build(), item_ids, dim, s, item_tower_version)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_queries(queries, self.dim)
        k = min(k, len(self))
        pre = max(int(self.settings.get("reorder_k") or 0), k) if self.settings.get("dims_per_block") else k
        leaves = int(self.settings.get("num_leaves_to_search") or 0) or None
        rows, scores = self.searcher.search_batched(
            q, final_num_neighbors=k, pre_reorder_num_neighbors=pre, leaves_to_search=leaves
        )
        return np.asarray(scores, dtype=np.float32), np.asarray(rows, dtype=np.int64)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self._write_meta(directory)
        (directory / "scann").mkdir(exist_ok=True)
        self.searcher.serialize(str(directory / "scann"), relative_path=True)
        return directory


def load_index(directory: str | Path) -> TopKIndex:
    """Load an index written by ``save``; the type comes from ``index.json``."""
    directory = Path(directory)
    meta = json.loads((directory / "index.json").read_text())
    item_ids = np.array(json.loads((directory / "item_ids.json").read_text()), dtype=object)
    if meta["type"] == BruteForceIndex.type:
        return BruteForceIndex(np.load(directory / "vectors.npy"), item_ids, meta["item_tower_version"])
    if meta["type"] == ScannIndex.type:
        from scann.scann_ops.py import scann_ops_pybind

        searcher = scann_ops_pybind.load_searcher(str(directory / "scann"))
        return ScannIndex(searcher, item_ids, meta["dim"], meta["settings"], meta["item_tower_version"])
    raise ValueError(f"unknown index type {meta['type']!r} in {directory / 'index.json'}")
