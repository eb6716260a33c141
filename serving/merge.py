"""Merging the sources' answers into one candidate list."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from core.candidates import CandidateBatch
from core.contracts import Candidate, SourceResult


def merge(
    results: Sequence[SourceResult], extra: Sequence[Candidate] = ()
) -> CandidateBatch:
    """De-duplicate by item id keeping every source's candidate. Order: best rank first, ties
    in source order, so truncation keeps each source's top items (round robin).

    Ranks are 0-based ints (the source contract). Hundreds of candidates per request, so the
    work is done in C where it can be: one sort of every candidate by ``rank * width +
    source index`` (the first time an item appears in that order is its best key), and
    provenance gathered item by item only for the few items several sources proposed. The
    answer is one :class:`CandidateBatch` (columns, no object per candidate)."""
    groups = [*(r.candidates for r in results), extra]
    width = len(groups)
    flat = [c for cands in groups for c in cands]
    keys = [c.rank * width + s for s, cands in enumerate(groups) for c in cands]
    ids = [c.item_id for c in flat]
    order = sorted(range(len(flat)), key=keys.__getitem__)  # stable: ties in source order
    multi: dict[str, list[Candidate]] = {i: [] for i, n in Counter(ids).items() if n > 1}
    if multi:
        for c in flat:  # source order: each item's provenance in the order sources answered
            found = multi.get(c.item_id)
            if found is not None:
                found.append(c)
    out_ids: list[str] = []
    out_prov: list[tuple[Candidate, ...]] = []
    seen: set[str] = set()
    for i in order:
        item = ids[i]
        if item in seen:
            continue
        seen.add(item)
        out_ids.append(item)
        found = multi.get(item)
        out_prov.append(tuple(found) if found is not None else (flat[i],))
    return CandidateBatch(out_ids, out_prov)
