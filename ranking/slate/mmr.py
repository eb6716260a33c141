"""Greedy maximal-marginal-relevance ordering with per-category and per-source limits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from core.contracts import ScoredCandidate


def best_source(c: ScoredCandidate) -> str:
    return min(c.provenance, key=lambda p: (p.rank, -p.score)).source if c.provenance else ""


class MmrSlatePolicy:
    """Picks items one at a time by ``lam * relevance - (1 - lam) * max_similarity_to_picked``.

    Relevance is utility min-max scaled to ``[0, 1]`` within the request, so ``lam`` means the
    same whatever the task weights' scale. Similarity is 1 for the same category (0 otherwise)
    or, given item embeddings, the cosine of the two items' vectors. ``lam = 1`` is plain
    utility order. An item is skipped while its category has ``max_per_category`` picks or its
    best source has used its quota.

    Invariants: at most ``n`` items, no repeats; with ``lam = 1`` and no limits the output is
    the utility order (ties in input order).
    """

    def __init__(
        self,
        lam: float,
        *,
        category_of: Callable[[str], str | None],
        max_per_category: int | None = None,
        source_quotas: dict[str, int] | None = None,
        embedding_of: Callable[[str], np.ndarray | None] | None = None,
    ):
        self.lam = lam
        self.category_of = category_of
        self.max_per_category = max_per_category
        self.source_quotas = dict(source_quotas or {})
        self.embedding_of = embedding_of

    def _similarity(self, a: str, b: str, cats: dict[str, str | None]) -> float:
        if self.embedding_of is not None:
            ea, eb = self.embedding_of(a), self.embedding_of(b)
            if ea is not None and eb is not None:
                denom = float(np.linalg.norm(ea) * np.linalg.norm(eb)) or 1.0
                return float(ea @ eb) / denom
        return 1.0 if cats[a] is not None and cats[a] == cats[b] else 0.0

    def select(
        self, scored: Sequence[ScoredCandidate], n: int
    ) -> list[tuple[ScoredCandidate, tuple[str, ...]]]:
        """Up to ``n`` picks, each with its reasons (``utility_rank:<r>``, ``mmr_diversity``
        when diversity moved it ahead of a higher-utility item)."""
        order = sorted(range(len(scored)), key=lambda i: -scored[i].utility)
        utility_rank = {scored[i].item_id: r for r, i in enumerate(order)}
        u = np.array([c.utility for c in scored], dtype=np.float64)
        span = float(u.max() - u.min()) if len(u) else 0.0
        rel = (u - u.min()) / span if span > 0 else np.ones_like(u)
        cats = {c.item_id: self.category_of(c.item_id) for c in scored}
        max_sim = np.zeros(len(scored))
        remaining = list(order)
        per_cat: Counter = Counter()
        per_src: Counter = Counter()
        picks: list[tuple[ScoredCandidate, tuple[str, ...]]] = []
        while remaining and len(picks) < n:
            best_i, best_val = None, -np.inf
            for i in remaining:
                c = scored[i]
                if (
                    self.max_per_category is not None
                    and per_cat[cats[c.item_id]] >= self.max_per_category
                ):
                    continue
                src = best_source(c)
                if src in self.source_quotas and per_src[src] >= self.source_quotas[src]:
                    continue
                val = self.lam * rel[i] - (1.0 - self.lam) * max_sim[i]
                if val > best_val + 1e-12:
                    best_i, best_val = i, val
            if best_i is None:
                break
            c = scored[best_i]
            skipped_better = remaining.index(best_i) > 0
            remaining.remove(best_i)
            per_cat[cats[c.item_id]] += 1
            per_src[best_source(c)] += 1
            for j in remaining:
                max_sim[j] = max(max_sim[j], self._similarity(scored[j].item_id, c.item_id, cats))
            reasons = (f"utility_rank:{utility_rank[c.item_id]}",)
            if skipped_better:
                reasons += ("mmr_diversity",)
            picks.append((c, reasons))
        return picks
