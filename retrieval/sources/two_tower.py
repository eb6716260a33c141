"""Personalised retrieval: the two-tower query tower plus an ANN index over item vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from core.catalogue import Catalogue
from core.config import TwoTowerSourceConfig
from core.contracts import Query, SourceResult
from core.features import UserState
from retrieval.similarity import query_vectors
from retrieval.sources.base import SourceContext, SourceUnavailable, make_result


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


class TwoTowerSource:
    kind = "two_tower"

    def __init__(self, name: str, artifacts: TwoTowerArtifacts | None, catalogue: Catalogue | None):
        self.name = name
        self.artifacts = artifacts
        self.catalogue = catalogue
        self.version = (
            f"{artifacts.model_version}/{artifacts.index_version}" if artifacts else "unloaded"
        )

    @classmethod
    def from_config(cls, cfg: TwoTowerSourceConfig, ctx: SourceContext) -> TwoTowerSource:
        return cls(cfg.name, ctx.two_tower, ctx.catalogue)

    def query_vectors(self, states: Sequence[UserState], surface: str, now: float) -> np.ndarray:
        """``(B, D)`` query vectors for ``B`` users (the batched half of :meth:`retrieve`)."""
        return query_vectors(self.artifacts.model, self.catalogue, states, surface=surface, now=now)

    def search(self, vectors: np.ndarray, limit: int) -> list[list[tuple[str, float]]]:
        scores, rows = self.artifacts.index.search(vectors, limit)
        ids = self.artifacts.index.item_ids
        return [
            [(str(ids[r]), float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
            for srow, rrow in zip(np.asarray(scores), np.asarray(rows), strict=True)
        ]

    def _retrieve_sync(self, query: Query, user_state: UserState, limit: int) -> SourceResult:
        if self.artifacts is None or self.catalogue is None:
            raise SourceUnavailable(f"{self.name}: two-tower model/index or catalogue not loaded")
        vec = self.query_vectors([user_state], query.surface, query.now.timestamp())
        (hits,) = self.search(vec, limit)
        return make_result(
            self.name,
            self.version,
            hits,
            {"history_len": len(user_state.history)},
        )

    async def retrieve(self, query: Query, user_state: UserState, limit: int) -> SourceResult:
        # Encoding and ANN search are CPU-bound; a thread keeps the event loop (and the other
        # sources' timeouts) running meanwhile.
        return await asyncio.to_thread(self._retrieve_sync, query, user_state, limit)
