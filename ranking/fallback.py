"""The order used when the ranker is unavailable: retrieval score, then popularity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from core.contracts import MergedCandidate, Query, ScoredCandidate
from core.features import PopularityCounter


class FallbackScorer:
    """Utility = the best source's score divided by that source's top score among these
    candidates (sources score on different scales: cosine, decayed counts, recency), with
    popularity breaking ties. ``task_scores`` stay empty: nothing was predicted.

    Invariant: one :class:`ScoredCandidate` per input, in input order; never fails on data a
    request carries (it is the path taken when something else already failed)."""

    version = "fallback:retrieval_then_popularity"

    def __init__(self, popularity: PopularityCounter | None):
        self.popularity = popularity

    def score(self, query: Query, candidates: Sequence[MergedCandidate]) -> list[ScoredCandidate]:
        top: dict[str, float] = defaultdict(float)
        for c in candidates:
            b = c.best
            top[b.source] = max(top[b.source], abs(b.score))
        now = query.now.timestamp()
        pops = [
            self.popularity.value(c.item_id, now) if self.popularity else 0.0 for c in candidates
        ]
        out = []
        for c, pop in zip(candidates, pops, strict=True):
            b = c.best
            rel = b.score / top[b.source] if top[b.source] > 0 else 0.0
            # Popularity is squashed into (0, 1e-3) so it only ever breaks ties.
            out.append(
                ScoredCandidate(
                    item_id=c.item_id,
                    provenance=c.provenance,
                    task_scores={},
                    utility=float(rel + 1e-3 * pop / (1.0 + pop)),
                )
            )
        return out
