"""A loaded two-tower query tower and its ANN index, and the check that ties them together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class VersionMismatch(ValueError):
    """The ANN index was built by a different item tower than the query tower being served."""


@runtime_checkable
class QueryEncoder(Protocol):
    """``retrieval.two_tower.TwoTowerModel`` satisfies this."""

    def encode_queries(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Stacked :func:`core.features.query_features` -> ``(B, D)`` float32."""
        ...


@runtime_checkable
class AnnIndex(Protocol):
    """What ``retrieval.index.load_index(dir)`` returns: row ``r`` of the index is
    ``item_ids[r]``; ``search`` returns ``(scores, rows)`` each ``(B, k)``, best first, with
    rows ``< 0`` for padding when fewer than ``k`` items exist."""

    item_ids: Sequence[str] | np.ndarray

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class TwoTowerArtifacts:
    """A loaded query tower and index with the versions that tie them together.

    Construction refuses a pair whose index was not built from this model's item tower:
    ``index_item_tower_version`` is the index manifest's ``config.item_tower_version`` (or
    ``lineage.parents["two_tower"]``)."""

    model: QueryEncoder
    index: AnnIndex
    model_version: str
    index_version: str
    index_item_tower_version: str

    def __post_init__(self) -> None:
        if self.index_item_tower_version != self.model_version:
            raise VersionMismatch(
                f"ANN index {self.index_version} was built by item tower "
                f"{self.index_item_tower_version}, but the query tower is {self.model_version}; "
                "serve a matching pair (promote the index built from this model)"
            )

    @property
    def versions(self) -> dict[str, str]:
        """What a decision record names: ``{"two_tower": …, "ann_index": …}``."""
        return {"two_tower": self.model_version, "ann_index": self.index_version}
