"""Greedy maximal-marginal-relevance ordering with per-category and per-source limits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from core.candidates import ScoredBatch
from core.catalogue import Catalogue
from core.components import SLATE_STEPS
from core.config import SlateStepSpec
from core.contracts import FilterResult, Placement, ScoredCandidate
from ranking.slate.draft import SlateContext, SlateDraft, utility_order_array

_TIE = 1e-12
"""A candidate beats the best so far only by more than this (earlier candidates win ties)."""


def _best_key(p) -> tuple:
    return p.rank, -p.score


def best_source(c: ScoredCandidate) -> str:
    prov = c.provenance
    if len(prov) == 1:  # most candidates: no comparison to make
        return prov[0].source
    return min(prov, key=_best_key).source if prov else ""


def _codes(values: Sequence) -> tuple[np.ndarray, list]:
    """``(B,)`` int codes of hashable ``values`` and the distinct values, by first appearance."""
    distinct = list(dict.fromkeys(values))  # de-duplicated in C, first appearance kept
    index = {v: k for k, v in enumerate(distinct)}
    return np.fromiter(map(index.__getitem__, values), np.int64, len(values)), distinct


class DiversityConfig(SlateStepSpec):
    method: Literal["mmr", "none"] = "mmr"
    """``none``: plain utility order (under the same limits)."""
    mmr_lambda: float = Field(0.8, ge=0.0, le=1.0)
    max_per_category: int | None = Field(None, ge=1)
    """At most this many items of one category (None: no cap). Default from
    ``training.slate_tradeoff`` on `small`: a cap of 3 cost 19% of the ranker order's expected
    clicks, MMR 0.8 alone 3.5% (docs/evaluation.md, "Slate policy")."""
    source_quotas: dict[str, int] = Field(default_factory=dict)
    """Most slate items whose best source is the named source."""


@SLATE_STEPS.register("diversity", DiversityConfig)
class MmrDiversityStep:
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
        categories_of: Callable[[Sequence[str]], list[str | None]] | None = None,
        catalogue: Catalogue | None = None,
    ):
        """``categories_of``: ``category_of`` over many ids at once (a catalogue's arrays);
        ``catalogue``: read by the rows the candidate batch already looked up, when given
        (the same categories as ``category_of``)."""
        self.lam = lam
        self.category_of = category_of
        self.categories_of = categories_of or (lambda ids: [category_of(i) for i in ids])
        self.max_per_category = max_per_category
        self.source_quotas = dict(source_quotas or {})
        self.embedding_of = embedding_of
        self.catalogue = catalogue
        self._names = (np.asarray(catalogue.categories + [None], dtype=object)
                       if catalogue is not None else None)  # fmt: skip
        # Each catalogue row's category code + 1, then 0 for row -1 (not in the catalogue):
        # a request's codes are one gather by row. int16 where the categories fit (a stable
        # argsort of it is a radix sort).
        self._cat_by_row = (None if catalogue is None else np.append(catalogue.category + 1, 0).astype(
            np.int16 if len(catalogue.categories) < np.iinfo(np.int16).max else np.int64))  # fmt: skip

    name = "diversity"

    @classmethod
    def from_config(cls, cfg: DiversityConfig, ctx: SlateContext) -> MmrDiversityStep:
        mmr = cfg.method == "mmr"
        return cls(
            cfg.mmr_lambda if mmr else 1.0,
            category_of=ctx.category_of,
            max_per_category=cfg.max_per_category,
            source_quotas=cfg.source_quotas,
            embedding_of=ctx.embedding_of if mmr else None,
            categories_of=ctx.categories_of,
            catalogue=ctx.catalogue,
        )

    def apply(self, draft: SlateDraft) -> FilterResult:
        """Fills the open positions from the pool (which keeps what it did not pick)."""
        pool = ScoredBatch.of(draft.pool)
        picks = self._picks(pool, draft.open)
        at = [i for i, _ in picks]
        return FilterResult(
            kept=pool.drop(at),
            removed=[],
            placed=[Placement(c, reasons) for c, (_, reasons) in zip(pool.rows_at(at), picks, strict=True)],
        )

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
        batch = ScoredBatch.of(scored)
        picks = self._picks(batch, n)
        return list(zip(batch.rows_at([i for i, _ in picks]), [r for _, r in picks], strict=True))

    def _picks(self, batch: ScoredBatch, n: int) -> list[tuple[int, tuple[str, ...]]]:
        """:meth:`select` as positions in ``batch``: a candidate is built only for a pick
        that is placed (and its sources read) by the caller."""
        # Vectorised over the candidates in utility order (position p = the p-th best); each
        # pick is one masked argmax instead of a Python pass over every remaining candidate.
        # Columns of the batch; the picks are positions in it.
        u = batch.utility_array()
        order_a = utility_order_array(batch)
        order = order_a.tolist()
        span = float(u.max() - u.min()) if len(u) else 0.0
        rel = (u - u.min()) / span if span > 0 else np.ones_like(u)
        rel_o = rel[order_a] if order else rel
        cat_cap = np.inf if self.max_per_category is None else self.max_per_category
        if self.source_quotas:
            # Best sources as codes into distinct names (a name's one code): ints per candidate.
            src_code, src_values = batch.best_source_codes()
            src_code = src_code[order_a] if order else src_code
            src_cap = np.array([self.source_quotas.get(s, np.inf) for s in src_values], dtype=float)
        else:  # no quota: every candidate's source is one unlimited code
            src_code, src_cap = np.zeros(len(order), dtype=np.int64), np.array([np.inf])
        if self.catalogue is not None and self.embedding_of is None and np.isfinite(rel_o).all():
            # The catalogue's category codes as they are (one code per name: its categories
            # are distinct), shifted so that 0 is "not in the catalogue" (None).
            cat_code = self._cat_by_row[batch.rows(self.catalogue)[order_a]]  # type: ignore[index]
            return self._select_by_category(batch, order, rel_o, cat_code, src_code, 0, cat_cap, src_cap, n)
        ranked_ids: list[str] = []
        if self.catalogue is None or self.embedding_of is not None:
            ids = batch.item_ids
            ranked_ids = [ids[i] for i in order]
        if self.catalogue is not None:  # the rows the rules looked up, in utility order
            rows = batch.rows(self.catalogue)[order_a]
            codes = np.where(rows >= 0, self.catalogue.category[np.maximum(rows, 0)], -1)
            cat_list = self._names[codes].tolist()  # -1: None (not in the catalogue)
        else:
            cat_list = self.categories_of(ranked_ids)
        cat_code, cat_values = _codes(cat_list)
        cats = dict(zip(ranked_ids, cat_list, strict=True)) if self.embedding_of is not None else {}
        # None is a category for the per-category limit but never similar to anything.
        none_cat = cat_values.index(None) if None in cat_values else -1
        if self.embedding_of is None and np.isfinite(rel_o).all():
            return self._select_by_category(batch, order, rel_o, cat_code, src_code, none_cat,
                                            cat_cap, src_cap, n)  # fmt: skip
        per_cat = np.zeros(len(cat_values))
        per_src = np.zeros(len(src_cap))
        max_sim = np.zeros(len(order))
        remaining = np.ones(len(order), dtype=bool)
        # Candidates whose category or best source has reached its limit: a count only grows
        # at a pick, so the mask is updated there (for that pick's category and source)
        # instead of recomputed from every count at every pick.
        open_ = (per_cat[cat_code] < cat_cap) & (per_src[src_code] < src_cap[src_code])
        capped = self.max_per_category is not None or bool(self.source_quotas)
        picks: list[tuple[int, tuple[str, ...]]] = []
        while len(picks) < n:
            cand = np.flatnonzero(remaining & open_ if capped else remaining)
            if not len(cand):
                break
            vals = self.lam * rel_o[cand] - (1.0 - self.lam) * max_sim[cand]
            best = self._argbest(vals)
            if best is None:
                break
            p = int(cand[best])
            skipped_better = bool(remaining[:p].any())
            remaining[p] = False
            per_cat[cat_code[p]] += 1
            per_src[src_code[p]] += 1
            if capped:
                if per_cat[cat_code[p]] >= cat_cap:
                    open_[cat_code == cat_code[p]] = False
                if per_src[src_code[p]] >= src_cap[src_code[p]]:
                    open_[src_code == src_code[p]] = False
            if self.embedding_of is None:
                if cat_code[p] != none_cat:
                    max_sim[remaining & (cat_code == cat_code[p])] = 1.0
            else:
                pick_id = ranked_ids[p]
                for j in np.flatnonzero(remaining).tolist():
                    sim = self._similarity(ranked_ids[j], pick_id, cats)
                    max_sim[j] = max(max_sim[j], sim)
            reasons = (f"utility_rank:{p}",)  # item ids are unique: p is its utility rank
            if skipped_better:
                reasons += ("mmr_diversity",)
            picks.append((order[p], reasons))
        return picks

    def _select_by_category(self, batch: ScoredBatch, order: list[int], rel_o: np.ndarray,
                            cat_code: np.ndarray, src_code: np.ndarray, none_cat: int, cat_cap: float,
                            src_cap: np.ndarray, n: int) -> list[tuple[int, tuple[str, ...]]]:  # fmt: skip
        """:meth:`select` when similarity is the category's (0 or 1): the same picks from one
        candidate per category. A value is ``lam·rel − (1 − lam)·sim``: within a category
        ``sim`` is the same for every candidate and ``lam·rel`` does not grow along the utility
        order, so a category's later candidates are worth at most its first open one (the
        first remaining one whose source has quota left), and :meth:`_argbest`'s first-to-last
        scan (``val > best + _TIE``) never moves to them: scanning each open category's first
        open candidate, in utility order, ends on the same pick, with the same float
        operations. A category's first open candidate only moves on when it is picked or its
        source runs out of quota (counts only grow), so each category keeps a pointer into its
        positions; a pick reads one candidate per category (a few dozen), where the scan over
        positions read past every candidate of a category that had reached its limit."""
        lam = self.lam
        lam_rel = (lam * rel_o).tolist()  # the values' first term, as the array expression has it
        pen = (1.0 - lam) * 1.0  # (1 - lam) · sim for a candidate whose category is picked
        cats, srcs, src_caps = cat_code.tolist(), src_code.tolist(), src_cap.tolist()
        m = len(order)
        # Positions grouped by category, each group in utility order: category c's are
        # grouped[start[c]:end[c]]; at[c] points at its first one not yet passed.
        grouped = np.argsort(cat_code, kind="stable").tolist()
        counts = np.bincount(cat_code) if m else np.zeros(0, np.int64)
        ends = np.cumsum(counts)
        end = ends.tolist()
        at = (ends - counts).tolist()
        present = np.flatnonzero(counts).tolist()
        remaining = [True] * m
        per_cat = [0] * len(counts)
        per_src = [0] * len(src_caps)
        head: dict[int, int] = {}  # each open category's first open position

        def advance(c: int) -> None:
            i, e = at[c], end[c]
            while i < e and not (remaining[grouped[i]] and per_src[srcs[grouped[i]]] < src_caps[srcs[grouped[i]]]):
                i += 1
            at[c] = i
            if i < e and per_cat[c] < cat_cap:
                head[c] = grouped[i]
            else:
                head.pop(c, None)

        if cat_cap > 0 and all(cap > 0 for cap in src_caps):
            # Nothing picked yet: each category's first position is open (what advance finds).
            head.update({c: grouped[at[c]] for c in present})
        else:
            for c in present:
                advance(c)
        picked_cats: set[int] = set()  # categories similar to a pick (never None's)
        first = 0  # the first remaining position
        picks: list[tuple[int, tuple[str, ...]]] = []
        while len(picks) < n:
            best_p, best_v = None, -np.inf
            for p in sorted(head.values()):
                r = lam_rel[p]
                if r <= best_v + _TIE:  # no later value can pass the scan's test
                    break
                v = r - pen if cats[p] in picked_cats else r
                if v > best_v + _TIE:
                    best_p, best_v = p, v
            if best_p is None:
                break
            p = best_p
            skipped_better = first < p
            remaining[p] = False
            while first < m and not remaining[first]:
                first += 1
            c, s = cats[p], srcs[p]
            per_cat[c] += 1
            per_src[s] += 1
            if c != none_cat:
                picked_cats.add(c)
            advance(c)
            if per_src[s] >= src_caps[s]:  # the source ran out: categories whose head it was move on
                for c2 in [c2 for c2, q in head.items() if srcs[q] == s]:
                    advance(c2)
            reasons = (f"utility_rank:{p}",)  # item ids are unique: p is its utility rank
            if skipped_better:
                reasons += ("mmr_diversity",)
            picks.append((order[p], reasons))
        return picks

    @staticmethod
    def _argbest(vals: np.ndarray) -> int | None:
        """The candidate a first-to-last scan keeping ``val > best + _TIE`` would end on
        (``None`` if it accepts none, i.e. every value is NaN)."""
        top = vals.max()
        near = np.flatnonzero(vals >= top - 2 * _TIE)
        # The scan always ends within _TIE of the maximum; a lone candidate there is its
        # answer. Near-ties (or NaN) are rare: replay the scan exactly.
        if len(near) == 1:
            return int(near[0])
        best_i, best_val = None, -np.inf
        for i, v in enumerate(vals.tolist()):
            if v > best_val + _TIE:
                best_i, best_val = i, v
        return best_i
