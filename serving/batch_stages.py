"""Stages of the batch path (:mod:`serving.batch`) over every user of a micro-batch at once.

:func:`serving.merge.merge` de-duplicates one request's source answers; the batch path has
hundreds of users on one surface plan, whose answers from the non-personal sources (trending,
fresh, editorial, pins) are the very same objects. :func:`merge_many` reads each distinct
answer's columns once, then merges every user in one array pass: one stable sort of every
``(user, rank * width + source)`` key, one ``np.unique`` of ``(user, item)`` pairs for the
de-duplication, and provenance gathered in Python only for the few items several sources
proposed. Each user's :class:`CandidateBatch` comes with the columns later stages read
(catalogue rows, retrieval score, best source), computed for the micro-batch at once.

The answers are :func:`serving.merge.merge`'s, item for item and provenance for provenance
(``tests/unit/test_batch_stages.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from core.candidates import RETRIEVAL_SCORE_SOURCE, CandidateBatch
from core.contracts import Candidate, SourceResult
from core.provenance import gather as _pick


class _Segment:
    """One distinct source answer's columns (read once however many users share it)."""

    __slots__ = ("objs", "ones", "ids", "sources", "scores", "ranks", "codes", "is_tt")

    def __init__(self, cands: Sequence[Candidate]):
        self.objs = list(cands)
        self.ones = list(zip(self.objs))  # each candidate's one-source provenance (1-tuples, in C)
        if set(map(type, self.objs)) <= {Candidate}:  # the columns, transposed in C
            cols = list(zip(*self.objs, strict=True)) if self.objs else [()] * 5
        else:  # anything else with the contract's attributes
            cols = [[getattr(c, f) for c in self.objs] for f in ("item_id", "source", "source_version", "score", "rank")]
        self.ids: list[str] = list(cols[0])
        self.sources: list[str] = list(cols[1])
        self.scores = np.array(cols[3], dtype=np.float64)
        self.ranks = np.array(cols[4], dtype=np.int64)
        self.codes: np.ndarray | None = None
        self.is_tt: np.ndarray | None = None


def merge_many(
    results: Sequence[Sequence[SourceResult]],
    extra: Sequence[Candidate] = (),
    catalogue: Any = None,
) -> list[CandidateBatch]:
    """``[merge(r, extra) for r in results]`` (every user's answers from the same sources, in
    the same order), in one pass; with ``catalogue``, each batch carries its catalogue rows."""
    if not results:
        return []
    width = len(results[0]) + 1
    if any(len(r) + 1 != width for r in results):
        raise ValueError("every user's answers must come from the same sources")
    segs: dict[int, _Segment] = {}
    layout: list[list[_Segment]] = []
    for user in results:
        row = []
        for cands in [*(r.candidates for r in user), extra]:
            seg = segs.get(id(cands))
            if seg is None:
                seg = segs[id(cands)] = _Segment(cands)
            row.append(seg)
        layout.append(row)
    # Item codes over the distinct answers only (shared answers are looked up once).
    index: dict[str, int] = dict.fromkeys(chain.from_iterable(seg.ids for seg in segs.values()))  # type: ignore[arg-type]
    index = dict(zip(index, range(len(index)), strict=True))
    for seg in segs.values():
        seg.codes = np.fromiter(map(index.__getitem__, seg.ids), np.int64, len(seg.ids))
        one = set(seg.sources)  # an answer is almost always one source's
        if len(one) == 1:
            seg.is_tt = np.full(len(seg.sources), RETRIEVAL_SCORE_SOURCE in one)
        else:
            seg.is_tt = np.fromiter(map(RETRIEVAL_SCORE_SOURCE.__eq__, seg.sources), bool, len(seg.sources))
    n_users = len(results)
    flat = [seg for row in layout for seg in row]
    sizes = np.array([len(seg.ids) for seg in flat], dtype=np.int64)
    user = np.repeat(np.repeat(np.arange(n_users), width), sizes)
    source = np.repeat(np.tile(np.arange(width), n_users), sizes)
    if not len(user):
        return [CandidateBatch([], []) for _ in results]
    rank = np.concatenate([seg.ranks for seg in flat])
    code = np.concatenate([seg.codes for seg in flat])  # type: ignore[misc]
    score = np.concatenate([seg.scores for seg in flat])
    is_tt = np.concatenate([seg.is_tt for seg in flat])  # type: ignore[misc]
    objs = list(chain.from_iterable(seg.objs for seg in flat))
    ones = list(chain.from_iterable(seg.ones for seg in flat))
    ids = list(chain.from_iterable(seg.ids for seg in flat))
    srcs = list(chain.from_iterable(seg.sources for seg in flat))
    # merge's order: best rank first, ties in source order, then answer order (stable);
    # each user's block apart.
    key = (rank - rank.min()) * width + source
    key = user * (int(key.max()) + 1) + key
    order = np.argsort(key, kind="stable")
    pair = user * len(index) + code
    _, first, counts = np.unique(pair[order], return_index=True, return_counts=True)
    by_pos = np.argsort(first, kind="stable")
    kept = order[first[by_pos]]  # each (user, item)'s first candidate, in merge order
    several = counts[by_pos] > 1
    retrieval = np.where(is_tt, score, np.nan).astype(np.float32)[kept]
    rows = catalogue.index_of(list(index))[code[kept]] if catalogue is not None else None
    kept_l = kept.tolist()
    k_ids, k_srcs = _pick(ids, kept_l), _pick(srcs, kept_l)
    k_prov = _pick(ones, kept_l)  # a shared answer's 1-tuples are built once for all its users
    if several.any():
        # Items several answers proposed: every candidate of theirs, grouped by (user, item)
        # in flat order, which is the order the sources answered (merge's provenance).
        at = np.flatnonzero(np.isin(pair, pair[kept[several]]))
        at = at[np.argsort(pair[at], kind="stable")]
        g_pair = pair[at]
        starts = np.flatnonzero(np.r_[True, g_pair[1:] != g_pair[:-1]])
        ends = np.r_[starts[1:], len(at)]
        objs_at = _pick(objs, at.tolist())
        provs = [tuple(objs_at[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
        # best source: lowest rank, then highest score, then the earlier answer
        group = np.repeat(np.arange(len(starts)), ends - starts)
        pos = np.arange(len(at))
        best = np.lexsort((pos, -score[at], rank[at], group))[starts]
        g_tt = is_tt[at]
        first_tt = np.full(len(starts), -1)
        tt_at = np.flatnonzero(g_tt)[::-1]  # reversed: the earliest of a group is written last
        first_tt[group[tt_at]] = tt_at
        g_retrieval = np.where(first_tt >= 0, score[at][np.maximum(first_tt, 0)], np.nan).astype(np.float32)
        g_best = _pick(srcs, at[best].tolist())
        # the kept items with several candidates, in kept order, and their groups
        slot = {p: g for g, p in enumerate(g_pair[starts].tolist())}
        for j, p in zip(np.flatnonzero(several).tolist(), pair[kept[several]].tolist(), strict=True):
            g = slot[p]
            k_prov[j] = provs[g]
            k_srcs[j] = g_best[g]
            retrieval[j] = g_retrieval[g]
    bounds = np.searchsorted(user[kept], np.arange(n_users + 1)).tolist()
    out = []
    for u in range(n_users):
        a, b = bounds[u], bounds[u + 1]
        if rows is None:
            batch = CandidateBatch(k_ids[a:b], k_prov[a:b])
        else:
            batch = CandidateBatch.with_columns(k_ids[a:b], k_prov[a:b], rows=rows[a:b], catalogue=catalogue,
                                                retrieval=retrieval[a:b], best=k_srcs[a:b])  # fmt: skip
        out.append(batch)
    return out
