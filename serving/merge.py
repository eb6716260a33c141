"""Merging the sources' answers into one candidate list."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from core.candidates import CandidateBatch
from core.contracts import Candidate, SourceResult
from core.provenance import Provenance, SourceColumns, as_columns, gather


def merge(
    results: Sequence[SourceResult], extra: Sequence[Candidate] = ()
) -> CandidateBatch:
    """De-duplicate by item id keeping every source's candidate. Order: best rank first, ties
    in source order, so truncation keeps each source's top items (round robin).

    Ranks are 0-based ints (the source contract). Hundreds of candidates per request, so the
    work is done on columns (a source answers :class:`core.provenance.SourceColumns`): every
    candidate's key is ``rank * width + source index`` (an item's best key, ties to the
    first answered, places it), the items are de-duplicated (by catalogue row when the
    sources carry rows: :func:`_dedupe_by_row`, else by id) and each (candidate, source)
    pair pointed at its item's row. The answer is one :class:`CandidateBatch` over the
    request's :class:`core.provenance.Provenance` (columns, no object per candidate)."""
    groups = [*(r.candidates for r in results), extra]
    width = len(groups)
    ids: list[str] = []
    sources: list[str] = []
    versions: list[str] = []
    scores, ranks, sizes, diags = [], [], [], []
    for cands in groups:
        i, src, ver, score, rank, diag = as_columns(cands)
        ids += i
        sources += src
        versions += ver
        scores.append(score)
        ranks.append(rank)
        sizes.append(len(i))
        diags.append(diag)
    rank = np.concatenate(ranks)
    group = np.repeat(np.arange(width, dtype=np.int64), sizes)
    keys = rank * width + group
    cat, pair_rows = _catalogue_rows(groups)
    if pair_rows is not None:
        out_ids, row, cat_rows = _dedupe_by_row(ids, keys, pair_rows, cat)
    else:
        out_ids, row = _dedupe_by_id(ids, keys)
        cat_rows = None
    diagnostics = None
    if any(d is not None for d in diags):
        diagnostics = []
        for d, n in zip(diags, sizes, strict=True):
            diagnostics += d if d is not None else [None] * n
    pairs = Provenance(len(out_ids), row, sources, versions, np.concatenate(scores), rank, diagnostics,
                       source_codes=_source_codes(groups, group))  # fmt: skip
    return CandidateBatch.from_provenance(out_ids, pairs, rows=cat_rows, catalogue=cat)


def _dedupe_by_id(ids: list[str], keys: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The items in order of their best key (each where it first appears in one stable sort
    of the keys: ties in source order), and each pair's row among them."""
    order = np.argsort(keys, kind="stable")  # stable: ties in source order
    in_order = itemgetter(*order.tolist())(ids) if len(ids) > 1 else tuple(ids)
    out_ids = list(dict.fromkeys(in_order))  # each item where it first appears
    row_of = dict(zip(out_ids, range(len(out_ids)), strict=True))
    return out_ids, np.fromiter(map(row_of.__getitem__, ids), dtype=np.int64, count=len(ids))


def _dedupe_by_row(ids: list[str], keys: np.ndarray, pair_rows: np.ndarray,
                   catalogue: Any) -> tuple[list[str], np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`_dedupe_by_id` when every pair's catalogue row is known (``-1``: not in the
    catalogue), plus the items' rows: one row is one item, so the items are grouped by row
    in numpy (a sort by (row, key, position)) instead of hashing every id twice; only ids
    outside the catalogue are told apart by id (a code of their own below ``-1``); when
    there are none, the items' ids are the catalogue's (equal strings, read by row)."""
    code = pair_rows
    unknown = np.flatnonzero(pair_rows < 0)
    if len(unknown):
        names: dict[str, int] = {}
        code = pair_rows.copy()
        code[unknown] = [-2 - names.setdefault(ids[p], len(names)) for p in unknown.tolist()]
    n_pairs = len(keys)
    by_item = np.lexsort((keys, code))  # each item's pairs together, its best (key, position) first
    grouped = code[by_item]
    first = np.ones(n_pairs, dtype=bool)
    first[1:] = grouped[1:] != grouped[:-1]
    best = by_item[first]  # each item's best pair
    place = np.argsort(keys[best] * n_pairs + best)  # the items by (best key, its position)
    out_pairs = best[place]
    slot = np.empty(len(best), dtype=np.int64)
    slot[place] = np.arange(len(best), dtype=np.int64)
    row = np.empty(n_pairs, dtype=np.int64)
    row[by_item] = slot[np.cumsum(first) - 1]
    rows = pair_rows[out_pairs]
    if len(unknown):
        return gather(ids, out_pairs.tolist()), row, np.maximum(rows, -1)
    return catalogue.item_ids[rows].tolist(), row, rows


def _source_codes(groups: list, group: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
    """The pairs' source codes (:class:`core.provenance.Provenance`) from the answer each
    came in, when each answer is one source's columns (pins, rows of their own, are empty
    unless the slate pins items): its source's code on every pair of it."""
    if not all(isinstance(g, SourceColumns) or not len(g) for g in groups):
        return None
    names: dict[str, int] = {}
    code = [names.setdefault(g.source, len(names)) if isinstance(g, SourceColumns) else 0 for g in groups]
    return np.asarray(code, dtype=np.int64)[group], list(names)


def _catalogue_rows(groups: list) -> tuple[Any, np.ndarray | None]:
    """Every pair's catalogue row (``-1``: not in it) when a source found its items by row
    (the two-tower index, the fresh scan: :attr:`core.provenance.SourceColumns.rows`) in
    one catalogue: those rows carried, only the other sources' ids looked up.
    ``(None, None)`` otherwise (the rules look every id up, as before)."""
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
    return cat, (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
