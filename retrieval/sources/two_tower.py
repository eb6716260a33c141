"""Personalised retrieval: the two-tower query tower plus an ANN index over item vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.catalogue import Catalogue
from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from core.features import UserState
from retrieval.artifacts import TwoTowerArtifacts
from retrieval.similarity import query_vectors
from retrieval.sources.base import SourceContext, SourceUnavailable, result_from_columns


class TwoTowerSourceConfig(SourceSpec):
    pass


@SOURCES.register("two_tower", TwoTowerSourceConfig, personalised=True)
class TwoTowerSource:
    kind = "two_tower"
    inline = True  # answers from memory, never suspends (serving.stages.SourceStage.inline)

    def __init__(self, name: str, artifacts: TwoTowerArtifacts | None, catalogue: Catalogue | None):
        self.name = name
        self.artifacts = artifacts
        self.catalogue = catalogue
        self.version = (
            f"{artifacts.model_version}/{artifacts.index_version}" if artifacts else "unloaded"
        )
        self._rows: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: TwoTowerSourceConfig, ctx: SourceContext) -> TwoTowerSource:
        return cls(cfg.name, ctx.two_tower, ctx.catalogue)

    def query_vectors(self, states: Sequence[UserState], surface: str, now: float) -> np.ndarray:
        """``(B, D)`` query vectors for ``B`` users (the batched half of :meth:`retrieve`)."""
        return query_vectors(self.artifacts.model, self.catalogue, states, surface=surface, now=now)

    def _search(self, vectors: np.ndarray, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query vector, its hits best first: index rows and float64 scores."""
        scores, rows = self.artifacts.index.search(vectors, limit)
        out = []
        for srow, rrow in zip(np.asarray(scores), np.asarray(rows), strict=True):
            found = rrow >= 0
            if not found.all():
                srow, rrow = srow[found], rrow[found]
            out.append((rrow, srow.astype(np.float64)))
        return out

    def search_columns(self, vectors: np.ndarray, limit: int) -> list[tuple[list[str], list[float]]]:
        """Per query vector, its hits as two columns, best first: item ids and scores."""
        ids = self.artifacts.index.item_ids
        return [(ids[r].tolist(), s.tolist()) for r, s in self._search(vectors, limit)]

    def _catalogue_rows(self) -> np.ndarray:
        """``(n_index,)`` int64: each index row's catalogue row (``-1``: not in it), once."""
        if self._rows is None:
            self._rows = self.catalogue.index_of(self.artifacts.index.item_ids)
        return self._rows

    def _vector(self, query: Query, user_state: UserState) -> np.ndarray:
        if self.artifacts is None or self.catalogue is None:
            raise SourceUnavailable(f"{self.name}: two-tower model/index or catalogue not loaded")
        return self.query_vectors([user_state], query.surface, query.now.timestamp())

    def retrieve_columns(self, query: Query, user_state: UserState,
                         limit: int) -> tuple[list[str], list[float], tuple[str, np.ndarray]]:  # fmt: skip
        """One user's hits as two columns, best first: item ids and scores (no per-candidate
        objects: what crosses a Serve hop), and the query vector searched with, as
        ``(two-tower version, (D,) vector)`` (the ranker's ``retrieval_score`` reuses it:
        :attr:`core.contracts.SourceResult.query_vector`)."""
        vec = self._vector(query, user_state)
        ids, scores = self.search_columns(vec, limit)[0]
        return ids, scores, (self.artifacts.model_version, vec[0])

    def retrieve_now(self, query: Query, user_state: UserState, limit: int,
                     name: str | None = None) -> SourceResult:  # fmt: skip
        """:meth:`retrieve` on the calling thread (a replica that does nothing else): the
        hits' catalogue rows come along (the index's rows mapped once). ``name``: the source
        name to answer under (a surface's source config names it; default this source's)."""
        vec = self._vector(query, user_state)
        ((found, scores),) = self._search(vec, limit)
        return result_from_columns(name or self.name, self.version, self.artifacts.index.item_ids[found].tolist(), scores,
                                   {"history_len": len(user_state.history)}, versions=self.artifacts.versions,
                                   query_vector=(self.artifacts.model_version, vec[0]),
                                   rows=self._catalogue_rows()[found], catalogue=self.catalogue)  # fmt: skip

    async def retrieve(self, query: Query, user_state: UserState, limit: int) -> SourceResult:
        # On the calling thread, as the Serve ingress runs it (``LocalTwoTowerSource``):
        # encoding one query and searching the index is a bounded ≈ 0.3 ms of CPU, and a
        # thread hand-off cost more than that (docs/performance.md). Inline, the source's
        # timeout cannot cut it short (in a thread it abandoned the wait, never the work): it
        # bounds awaiting sources, as in the ingress.
        return self.retrieve_now(query, user_state, limit)
