"""A tenant's item catalogue held as column arrays, for feature computation and policy checks.

Items are kept sorted by ``item_id``; an item's *index* is its position in that order and is
what embedding tables use (``index + 1``, with 0 reserved for unknown items). Timestamps are
float epoch seconds; missing availability bounds are ``nan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.schema import ITEM_SCHEMA, MATURITY_LEVELS

MAX_TAGS = 4


def _epoch_seconds(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    ints = pc.cast(col, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    arr = ints.to_numpy(zero_copy_only=False).astype("float64")
    mask = pc.is_null(col).to_numpy(zero_copy_only=False)
    arr = arr / 1e6
    arr[mask] = np.nan
    return arr


@dataclass
class Catalogue:
    tenant_id: str
    item_ids: np.ndarray
    """``(N,)`` item ids, sorted."""
    category: np.ndarray
    """``(N,)`` int32 index into :attr:`categories`."""
    categories: list[str]
    tags: np.ndarray
    """``(N, MAX_TAGS)`` int32 index into :attr:`tag_vocab` plus one; 0 pads."""
    tag_vocab: list[str]
    created_at: np.ndarray
    available_from: np.ndarray
    available_until: np.ndarray
    maturity: np.ndarray
    """``(N,)`` int8 index into :data:`core.schema.MATURITY_LEVELS`."""
    titles: np.ndarray | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _opens: np.ndarray = field(init=False, repr=False, compare=False)
    """``(N,)`` when each item becomes available: the later of ``created_at`` and
    ``available_from`` (no bound: ``created_at``; no creation time: NaN, never)."""
    _closes: np.ndarray = field(init=False, repr=False, compare=False)
    """``(N,)`` ``available_until``, no bound as ``+inf``."""

    def __post_init__(self) -> None:
        if not self._index:
            self._index = {item: i for i, item in enumerate(self.item_ids.tolist())}
        # :meth:`available`'s three bounds as two, once per catalogue.
        start = self.available_from
        self._opens = np.where(np.isnan(start), self.created_at, np.maximum(self.created_at, start))
        self._closes = np.where(np.isnan(self.available_until), np.inf, self.available_until)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._index

    def index_of(self, item_ids: list[str] | np.ndarray) -> np.ndarray:
        """``(B,)`` int64 indices; -1 for items not in the catalogue."""
        # map over the dict's get runs in C: no Python frame per item.
        return np.fromiter(map(self._index.get, item_ids, repeat(-1)), dtype=np.int64,
                           count=len(item_ids))  # fmt: skip

    def row_of(self, item_id: str) -> int:
        """One item's row (:meth:`index_of` of one id without the array): -1 if unknown."""
        return self._index.get(item_id, -1)

    def category_of(self, item_id: str) -> str | None:
        i = self._index.get(item_id)
        return None if i is None else self.categories[self.category[i]]

    def available(self, idx: np.ndarray, now: float) -> np.ndarray:
        """``(B,)`` bool: created and inside the availability window at ``now`` (``now`` a
        finite time): ``created_at <= now``, ``available_from <= now`` where set and
        ``now < available_until`` where set."""
        ok = self._opens[idx] <= now
        ok &= now < self._closes[idx]
        return ok

    @classmethod
    def from_table(cls, table: pa.Table, tenant_id: str | None = None) -> Catalogue:
        if tenant_id is not None and "tenant_id" in table.column_names:
            table = table.filter(pc.equal(table["tenant_id"], tenant_id))
        if table.num_rows == 0:
            raise ValueError(f"catalogue for tenant {tenant_id!r} is empty")
        table = table.sort_by("item_id")
        tenant = tenant_id or table["tenant_id"][0].as_py()
        cats = table["category"].to_pylist()
        categories = sorted(set(cats))
        cat_index = {c: i for i, c in enumerate(categories)}
        tag_lists = table["tags"].to_pylist() if "tags" in table.column_names else [[]] * len(cats)
        tag_vocab = sorted({t for tags in tag_lists for t in (tags or [])})
        tag_index = {t: i + 1 for i, t in enumerate(tag_vocab)}
        tags = np.zeros((len(cats), MAX_TAGS), dtype=np.int32)
        for row, item_tags in enumerate(tag_lists):
            for j, t in enumerate((item_tags or [])[:MAX_TAGS]):
                tags[row, j] = tag_index[t]
        maturity_index = {m: i for i, m in enumerate(MATURITY_LEVELS)}
        return cls(
            tenant_id=tenant,
            item_ids=np.array(table["item_id"].to_pylist(), dtype=object),
            category=np.array([cat_index[c] for c in cats], dtype=np.int32),
            categories=categories,
            tags=tags,
            tag_vocab=tag_vocab,
            created_at=_epoch_seconds(table["created_at"]),
            available_from=_epoch_seconds(table["available_from"]),
            available_until=_epoch_seconds(table["available_until"]),
            maturity=np.array(
                [maturity_index.get(m, len(MATURITY_LEVELS) - 1) for m in table["maturity"].to_pylist()],
                dtype=np.int8,
            ),
            titles=np.array(table["title"].to_pylist(), dtype=object)
            if "title" in table.column_names
            else None,
        )

    @classmethod
    def load(cls, data_root: str, tenant_id: str) -> Catalogue:
        """Read ``<data_root>/catalogue/tenant_id=<tenant>/`` (any pyarrow.fs URI)."""
        root = data_root.rstrip("/") + "/catalogue"
        if "://" not in root and not Path(root).exists():
            raise FileNotFoundError(f"no catalogue at {root}")
        dataset = ds.dataset(root, format="parquet", partitioning="hive", schema=ITEM_SCHEMA)
        table = dataset.to_table(filter=ds.field("tenant_id") == tenant_id)
        return cls.from_table(table, tenant_id)
