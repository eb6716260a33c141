"""Items that co-occur with the user's most recent positive interactions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from core.components import SOURCES
from core.config import SourceSpec
from core.contracts import Query, SourceResult
from core.features import UserState, sort_best_first
from retrieval.cooccurrence import ItemToItemIndex
from retrieval.sources.base import SourceContext, SourceUnavailable, result_from_columns

_SEED_CACHE = 4096
"""Seeds whose neighbour columns a source keeps (≈ 50 neighbours each)."""


class ItemToItemSourceConfig(SourceSpec):
    seed_items: int = Field(5, ge=1, le=50, description="most recent history items used as seeds")
    min_cooccurrence: int = Field(2, ge=1)


@SOURCES.register("item_to_item", ItemToItemSourceConfig, personalised=True)
class ItemToItemSource:
    """Score of a candidate = sum over seeds of ``recency_weight(seed) * cosine(seed, item)``;
    the most recent seed weighs 1, the next 1/2, and so on, so the page follows what the user
    did last. Seeds come from ``query.context["item_id"]`` (item page) first, then history."""

    kind = "item_to_item"
    inline = True  # answers from memory, never suspends (serving.stages.SourceStage.inline)

    def __init__(
        self, name: str, index: ItemToItemIndex | None, *, seed_items: int, min_cooccurrence: int
    ):
        self.name = name
        self.index = index
        self.seed_items = seed_items
        self.min_cooccurrence = min_cooccurrence
        self.version = index.version if index is not None else "unloaded"
        self._cache: dict[str, tuple[list[str], list[float]]] = {}
        self._names: list[str] = []  # every neighbour id, sorted: a code is a position here
        self._codes: dict[str, int] | None = None
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_config(cls, cfg: ItemToItemSourceConfig, ctx: SourceContext) -> ItemToItemSource:
        return cls(
            cfg.name,
            ctx.cooccurrence,
            seed_items=cfg.seed_items,
            min_cooccurrence=cfg.min_cooccurrence,
        )

    def seeds(self, query: Query, user_state: UserState) -> list[str]:
        seeds: list[str] = []
        context_item = query.context.get("item_id") if query.context else None
        if isinstance(context_item, str):
            seeds.append(context_item)
        for item in reversed(user_state.history):
            if len(seeds) >= self.seed_items:
                break
            if item not in seeds:
                seeds.append(item)
        return seeds

    def _neighbours(self, seed: str) -> tuple[list[str], list[float]]:
        """``seed``'s neighbours with at least ``min_cooccurrence`` co-occurrences, in the
        index's order, as columns (ids, scores); the index is immutable, so the columns of
        recently used seeds are kept (at most ``_SEED_CACHE``)."""
        got = self._cache.get(seed)
        if got is None:
            found = [n for n in self.index.get(seed) if n.count >= self.min_cooccurrence]  # type: ignore[union-attr]
            got = ([n.item_id for n in found], [n.score for n in found])
            if len(self._cache) >= _SEED_CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[seed] = got
        return got

    async def retrieve(self, query: Query, user_state: UserState, limit: int) -> SourceResult:
        if self.index is None:
            raise SourceUnavailable(f"{self.name}: co-occurrence index not loaded")
        seeds = self.seeds(query, user_state)
        scores: dict[str, float] = {}
        via: dict[str, list[str]] = {}
        for pos, seed in enumerate(seeds):
            n_ids, n_scores = self._neighbours(seed)
            w = pos + 1
            for item, sc in zip(n_ids, n_scores, strict=True):
                scores[item] = scores.get(item, 0.0) + sc / w
                found = via.get(item)
                if found is None:
                    via[item] = [seed]
                else:
                    found.append(seed)
        ranked = list(scores.items())
        sort_best_first(ranked)  # by (-score, id)
        del ranked[limit:]
        ids, best = zip(*ranked, strict=True) if ranked else ((), ())
        return result_from_columns(self.name, self.version, ids, best, {"seeds": seeds},
                                   versions={"item_to_item": self.version},
                                   per_item=[{"seeds": via[i]} for i in ids])  # fmt: skip

    def _neighbour_arrays(self, seed: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_neighbours` as arrays: neighbour codes (ranks in item-id order, so a sort
        by code is a sort by id) and scores (float64)."""
        got = self._arrays.get(seed)
        if got is None:
            if self._codes is None:
                self._names = sorted({n.item_id for ns in self.index.neighbours.values() for n in ns})  # type: ignore[union-attr]
                self._codes = {item: c for c, item in enumerate(self._names)}
            ids, scores = self._neighbours(seed)
            got = (np.fromiter(map(self._codes.__getitem__, ids), np.int64, len(ids)), np.array(scores, dtype=np.float64))
            if len(self._arrays) >= _SEED_CACHE:
                self._arrays.pop(next(iter(self._arrays)))
            self._arrays[seed] = got
        return got

    def retrieve_many(self, queries: Sequence[Query], states: Sequence[UserState],
                      limit: int) -> list[SourceResult | BaseException]:  # fmt: skip
        """:meth:`retrieve` of many users at once (batch scoring), the same answers: every
        user's seeds' neighbours stacked, each (user, item)'s ``score / w`` summed in seed
        order (``np.bincount`` adds in input order, as the loop does), one sort by (user,
        score descending, item id) for all users, and only the kept items' seeds gathered."""
        if self.index is None:
            return [SourceUnavailable(f"{self.name}: co-occurrence index not loaded")] * len(queries)
        seeds = [self.seeds(q, s) for q, s in zip(queries, states, strict=True)]
        parts = [(u, pos, *self._neighbour_arrays(seed)) for u, ss in enumerate(seeds) for pos, seed in enumerate(ss)]
        n = [len(p[2]) for p in parts]
        user = np.repeat(np.array([p[0] for p in parts], dtype=np.int64), n)
        seed_at = np.repeat(np.array([p[1] for p in parts], dtype=np.int64), n)
        code = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
        contrib = np.concatenate([p[3] / (p[1] + 1) for p in parts]) if parts else np.zeros(0)
        key = user * (len(self._names) + 1) + code
        groups, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        total = np.bincount(inverse, weights=contrib, minlength=len(groups))
        g_user, g_code = user[first], code[first]
        order = np.lexsort((g_code, -total, g_user))
        bounds = np.searchsorted(g_user[order], np.arange(len(seeds) + 1)).tolist()
        # Which seeds proposed each item, as a bit mask (the seeds in seed order are its set
        # bits in order); a user's items proposed by the same seeds share one diagnostics dict.
        by_group = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[by_group], np.arange(len(groups)))
        masks = (np.bitwise_or.reduceat(1 << seed_at[by_group], starts) if len(groups) else np.zeros(0, np.int64)).tolist()
        names = self._names
        out: list[SourceResult | BaseException] = []
        for u, ss in enumerate(seeds):
            kept = order[bounds[u] : min(bounds[u + 1], bounds[u] + limit)].tolist()
            diag = {m: {"seeds": [x for p, x in enumerate(ss) if m >> p & 1]} for m in {masks[g] for g in kept}}
            via = [diag[masks[g]] for g in kept]
            out.append(result_from_columns(self.name, self.version, [names[c] for c in g_code[kept].tolist()],
                                           total[kept], {"seeds": ss}, versions={"item_to_item": self.version},
                                           per_item=via))  # fmt: skip
        return out
