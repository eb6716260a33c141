"""Merging the sources' answers into one candidate list."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from core.candidates import CandidateBatch
from core.contracts import Candidate, SourceResult
from core.provenance import Provenance, SourceColumns, as_columns


def merge(
    results: Sequence[SourceResult], extra: Sequence[Candidate] = ()
) -> CandidateBatch:
    """De-duplicate by item id keeping every source's candidate. Order: best rank first, ties
    in source order, so truncation keeps each source's top items (round robin).

    Ranks are 0-based ints (the source contract). Hundreds of candidates per request, so the
    work is done on columns (a source answers :class:`core.provenance.SourceColumns`): one
    stable sort of every candidate by ``rank * width + source index`` (the first time an item
    appears in that order is its best key), the item ids de-duplicated in that order by a
    dict, and each (candidate, source) pair pointed at its item's row. The answer is one
    :class:`CandidateBatch` over the request's :class:`core.provenance.Provenance` (columns,
    no object per candidate)."""
    groups = [*(r.candidates for r in results), extra]
    width = len(groups)
    ids: list[str] = []
    sources: list[str] = []
    versions: list[str] = []
    scores, ranks, group, diags = [], [], [], []
    any_diag = False
    for s, cands in enumerate(groups):
        i, src, ver, score, rank, diag = as_columns(cands)
        ids += i
        sources += src
        versions += ver
        scores.append(score)
        ranks.append(rank)
        group.append(np.full(len(i), s, dtype=np.int64))
        any_diag |= diag is not None
        diags.append(diag)
    rank = np.concatenate(ranks)
    keys = rank * width + np.concatenate(group)
    order = np.argsort(keys, kind="stable")  # stable: ties in source order
    in_order = itemgetter(*order.tolist())(ids) if len(ids) > 1 else tuple(ids)
    out_ids = list(dict.fromkeys(in_order))  # each item where it first appears
    row_of = dict(zip(out_ids, range(len(out_ids)), strict=True))
    row = np.fromiter(map(row_of.__getitem__, ids), dtype=np.int64, count=len(ids))
    diagnostics = None
    if any_diag:  # one list, extended in C
        diagnostics = []
        for d, c in zip(diags, groups, strict=True):
            diagnostics += d if d is not None else [None] * len(c)
    pairs = Provenance(len(out_ids), row, sources, versions, np.concatenate(scores), rank, diagnostics,
                       source_codes=_source_codes(groups, group))  # fmt: skip
    cat, cat_rows = _catalogue_rows(groups, len(out_ids), row)
    return CandidateBatch.from_provenance(out_ids, pairs, rows=cat_rows, catalogue=cat)


def _source_codes(groups: list, group: list[np.ndarray]) -> tuple[np.ndarray, list[str]] | None:
    """The pairs' source codes (:class:`core.provenance.Provenance`) from the answer each
    came in, when each answer is one source's columns (pins, rows of their own, are empty
    unless the slate pins items): its source's code on every pair of it."""
    if not all(isinstance(g, SourceColumns) or not len(g) for g in groups):
        return None
    names: dict[str, int] = {}
    code = [names.setdefault(g.source, len(names)) if isinstance(g, SourceColumns) else 0 for g in groups]
    return np.asarray(code, dtype=np.int64)[np.concatenate(group)], list(names)


def _catalogue_rows(groups: list, n: int, row: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """The merged items' catalogue rows when a source found its items by row (the two-tower
    index, the fresh scan: :attr:`core.provenance.SourceColumns.rows`) in one catalogue:
    those rows carried, only the other sources' ids looked up. ``(None, None)`` otherwise
    (the rules look every id up, as before)."""
    cats = {id(g.catalogue): g.catalogue for g in groups if isinstance(g, SourceColumns) and g.rows is not None}
    if len(cats) != 1:
        return None, None
    (cat,) = cats.values()
    parts = []
    for g in groups:
        if isinstance(g, SourceColumns) and g.rows is not None and g.catalogue is cat:
            parts.append(g.rows)
        elif len(g):
            parts.append(cat.index_of(g.item_ids if isinstance(g, SourceColumns) else [c[0] for c in g]))
    out = np.empty(n, dtype=np.int64)
    if parts:
        out[row] = np.concatenate(parts)  # every pair of an item names its one row
    return cat, out
