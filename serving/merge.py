"""Merging the sources' answers into one candidate list."""

from __future__ import annotations

from collections.abc import Sequence

from core.contracts import Candidate, MergedCandidate, SourceResult


def merge(
    results: Sequence[SourceResult], extra: Sequence[Candidate] = ()
) -> list[MergedCandidate]:
    """De-duplicate by item id keeping every source's candidate. Order: best rank first, ties
    in source order, so truncation keeps each source's top items (round robin)."""
    prov: dict[str, list[Candidate]] = {}
    order: dict[str, tuple[int, int]] = {}
    for s_idx, res in enumerate([*results, SourceResult("extra", "", tuple(extra))]):
        for c in res.candidates:
            prov.setdefault(c.item_id, []).append(c)
            key = (c.rank, s_idx)
            if c.item_id not in order or key < order[c.item_id]:
                order[c.item_id] = key
    items = sorted(prov, key=lambda i: order[i])
    return [MergedCandidate(item_id=i, provenance=tuple(prov[i])) for i in items]
