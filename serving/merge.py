"""Merging the sources' answers into one candidate list."""

from __future__ import annotations

from collections.abc import Sequence

from core.contracts import Candidate, MergedCandidate, SourceResult


def merge(
    results: Sequence[SourceResult], extra: Sequence[Candidate] = ()
) -> list[MergedCandidate]:
    """De-duplicate by item id keeping every source's candidate. Order: best rank first, ties
    in source order, so truncation keeps each source's top items (round robin)."""
    # One pass, one dict lookup per candidate: hundreds of candidates per request. An item's
    # key is (rank, source index) of its best-ranked candidate; the first one seen wins ties.
    first: dict[str, list] = {}  # item -> [rank, source index, candidate, *more candidates]
    get = first.get
    for s_idx, candidates in enumerate([*(r.candidates for r in results), extra]):
        for c in candidates:
            item = c.item_id
            entry = get(item)
            if entry is None:
                first[item] = [c.rank, s_idx, c]
            else:
                entry.append(c)
                if c.rank < entry[0]:  # a later source index never wins a tie
                    entry[0], entry[1] = c.rank, s_idx
    ordered = sorted(first.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    return [MergedCandidate(item, tuple(entry[2:])) for item, entry in ordered]


