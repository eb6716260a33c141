"""A request's candidates as one columnar batch, from merge to the decision record.

A request carries ≈ 700 merged candidates and ≈ 500 scored ones through merge, the rules, the
ranker, the slate steps and the record. Built as one Python object per candidate per stage,
that was most of the request's Python work. :class:`CandidateBatch` and :class:`ScoredBatch`
hold them as columns instead: item ids, each candidate's provenance (the sources' own
:class:`core.contracts.Candidate` s, never copied), and what the stages derive from them once
per request — the catalogue rows, the two-tower score, the best source; for scored
candidates one column per task and the utility. A stage narrows a batch with :meth:`take`
(index arrays or a boolean mask), so the rows are looked up once however many stages read
them.

Both are also read-only ``Sequence`` s of the per-candidate tuples
(:class:`core.contracts.MergedCandidate`, :class:`core.contracts.ScoredCandidate`), built on
access: a rule or slate step written against the row contract (a plug-in, a test) works
unchanged, and pays for the rows it touches only.

Invariants: item ids are unique within a batch; a batch is never mutated (``take`` makes a new
one); every column has one entry per candidate, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from core.contracts import Candidate, MergedCandidate, ScoredCandidate
from core.provenance import Provenance
from core.provenance import gather as _pick

RETRIEVAL_SCORE_SOURCE = "two_tower"
"""The source whose score is the ranker's ``retrieval_score`` feature (see
:mod:`ranking.scorer`)."""

def _positions(selector: Any, n: int) -> np.ndarray:
    """``selector`` as a new ``(k,)`` int64 array of positions: a ``(n,)`` bool mask, a
    ``range`` or positions already."""
    if isinstance(selector, range):  # np.asarray would read a range one int at a time
        return np.arange(selector.start, selector.stop, selector.step, dtype=np.int64)
    arr = np.asarray(selector)
    if arr.dtype == bool:
        if len(arr) != n:
            raise ValueError(f"mask of {len(arr)} for a batch of {n}")
        return np.flatnonzero(arr)
    return np.array(arr, dtype=np.int64)


class CandidateBatch(Sequence[MergedCandidate]):
    """Merged candidates as columns (see the module docstring). ``provenance[i]`` is every
    source's :class:`Candidate` for ``item_ids[i]``, in the order the sources answered.

    A batch from the merge (:meth:`from_provenance`) holds its provenance as the request's
    :class:`core.provenance.Provenance` pair columns (shared by every narrowing, with the
    rows of it this batch holds): its retrieval scores, best sources and record columns are
    array operations, and a ``provenance`` tuple is built only for a row that is read."""

    __slots__ = ("item_ids", "_prov", "_pairs", "_pair_rows", "_rows", "_catalogue",
                 "_retrieval", "_best", "_row_pairs")  # fmt: skip

    def __init__(self, item_ids: list[str], provenance: list[tuple[Candidate, ...]]):
        if len(item_ids) != len(provenance):
            raise ValueError(f"{len(item_ids)} item ids but {len(provenance)} provenance rows")
        self.item_ids = item_ids
        self._prov: list[tuple[Candidate, ...]] | None = provenance
        self._pairs: Provenance | None = None
        self._pair_rows: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._catalogue: Any = None
        self._retrieval: np.ndarray | None = None
        self._best: list[str] | None = None
        self._row_pairs: Provenance | None = None

    @classmethod
    def from_provenance(cls, item_ids: list[str], pairs: Provenance, pair_rows: np.ndarray | None = None,
                        *, rows: np.ndarray | None = None, catalogue: Any = None) -> CandidateBatch:  # fmt: skip
        """A batch whose candidates are ``pairs``' rows ``pair_rows`` (``None``: all, in
        order), ``item_ids`` theirs. ``rows``: their rows in ``catalogue`` when the builder
        looked them up already (the batch path's merge, for a whole micro-batch at once)."""
        out = object.__new__(cls)
        out.item_ids = item_ids
        out._prov, out._pairs, out._pair_rows = None, pairs, pair_rows
        out._rows, out._catalogue = (rows, catalogue) if rows is not None else (None, None)
        out._retrieval = out._best = out._row_pairs = None
        return out

    @classmethod
    def of(cls, candidates: Sequence[MergedCandidate]) -> CandidateBatch:
        """``candidates`` as a batch (itself when it already is one)."""
        if isinstance(candidates, CandidateBatch):
            return candidates
        if isinstance(candidates, ScoredBatch):
            return candidates.candidates
        items = list(candidates)
        return cls([c[0] for c in items], [tuple(c[1]) for c in items])

    @property
    def provenance(self) -> list[tuple[Candidate, ...]]:
        if self._prov is None:
            self._prov = self._pairs.rows_of(self.item_ids, self._rows_in_pairs())  # type: ignore[union-attr]
        return self._prov

    def provenance_of(self, i: int) -> tuple[Candidate, ...]:
        """``provenance[i]``, without building the other rows' tuples."""
        if self._prov is not None:
            return self._prov[i]
        r = i if self._pair_rows is None else int(self._pair_rows[i])
        return self._pairs.rows_of([self.item_ids[i]], [r])[0]  # type: ignore[union-attr]

    def provenance_at(self, positions: list[int]) -> list[tuple[Candidate, ...]]:
        """``[provenance[i] for i in positions]`` read in one go (a slate step's placements:
        a few array operations for all of them, not one pass each)."""
        if self._prov is not None:
            return _pick(self._prov, positions)
        rows = positions if self._pair_rows is None else self._pair_rows[positions].tolist()
        return self._pairs.rows_of(_pick(self.item_ids, positions), rows)  # type: ignore[union-attr]

    def _rows_in_pairs(self) -> list[int]:
        return list(range(len(self.item_ids))) if self._pair_rows is None else self._pair_rows.tolist()

    # ---------------------------------------------------------------- the row view
    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(len(self.item_ids))[i])
        return MergedCandidate(self.item_ids[i], self.provenance_of(i))

    def __iter__(self) -> Iterator[MergedCandidate]:
        return map(MergedCandidate._make, zip(self.item_ids, self.provenance, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CandidateBatch):
            return self.item_ids == other.item_ids and self.provenance == other.provenance
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CandidateBatch({len(self)} candidates)"

    # ---------------------------------------------------------------- columns
    def rows(self, catalogue: Any) -> np.ndarray:
        """``(B,)`` int64 catalogue rows (``-1``: not in the catalogue), looked up once per
        batch and catalogue and carried through :meth:`take`."""
        if self._rows is None or self._catalogue is not catalogue:
            self._rows = catalogue.index_of(self.item_ids)
            self._catalogue = catalogue
        return self._rows

    def retrieval_scores(self) -> np.ndarray:
        """``(B,)`` float32: the two-tower source's score, NaN where it did not propose the
        item."""
        if self._retrieval is None:
            pairs, idx = self._pair_table()
            scores = pairs.retrieval_scores(RETRIEVAL_SCORE_SOURCE)
            self._retrieval = scores if idx is None else scores[idx]
        return self._retrieval

    def best_sources(self) -> list[str]:
        """The source of each candidate's best (lowest rank, then highest score) provenance
        entry (:attr:`MergedCandidate.best`)."""
        if self._best is None:
            pairs, idx = self._pair_table()
            self._best = pairs.best_sources(idx)
        return self._best

    def best_source_codes(self) -> tuple[np.ndarray, list[str]]:
        """:meth:`best_sources` as ``(B,)`` int64 codes into distinct names
        (:meth:`core.provenance.Provenance.best_source_codes`)."""
        pairs, idx = self._pair_table()
        codes, names = pairs.best_source_codes()
        return (codes if idx is None else codes[idx]), names

    @property
    def typed_provenance(self) -> bool:
        """Whether :meth:`provenance_columns` are typed by construction: ``int`` rows and
        ranks, ``float`` scores, ``str`` sources and versions (the merge's pair columns)."""
        return self._pairs is not None

    def positions_in(self, merged: CandidateBatch) -> np.ndarray | None:
        """``(B,)`` int64: where each of these candidates is in ``merged``, when ``merged`` is
        the whole batch of the merge these were narrowed from (the pairs' every row, in
        order); else ``None`` (look the ids up)."""
        if self._pairs is None or merged._pairs is not self._pairs or merged._pair_rows is not None:
            return None
        return np.arange(len(self.item_ids)) if self._pair_rows is None else self._pair_rows

    def provenance_columns(self) -> tuple[list[int], list[str], list[str], list[float], list[int]]:
        """One row per (candidate, source) pair, by candidate then in the order the sources
        answered: ``(candidate row, source, version, score, rank)`` (the decision record's
        provenance columns)."""
        pairs, rows = self._pair_table()
        return pairs.table(rows)

    def sources_of(self, positions: Sequence[int]) -> list[tuple[str, ...]]:
        """The distinct sources of the candidates at ``positions``, in the order they
        answered (:attr:`core.contracts.SlateItem.sources`), no provenance tuple built."""
        pairs, rows = self._pair_table()
        at = np.asarray(positions, dtype=np.int64)
        return pairs.sources_of(at if rows is None else rows[at])

    def _pair_table(self) -> tuple[Provenance, np.ndarray | None]:
        """The :class:`Provenance` this batch's candidates are rows of, and which rows
        (``None``: all, in order). A batch built from rows gets one from its rows, once: the
        columns have one implementation whichever way the batch was built."""
        if self._pairs is not None:
            return self._pairs, self._pair_rows
        if self._row_pairs is None:
            self._row_pairs = Provenance.from_rows(self._prov)  # type: ignore[arg-type]
        return self._row_pairs, None

    # ---------------------------------------------------------------- narrowing
    def take(self, selector: Any) -> CandidateBatch:
        """The candidates at ``selector`` (positions, or a ``(B,)`` bool mask), in that order;
        columns already computed come along."""
        base = _positions(selector, len(self))
        idx = base.tolist()
        if self._pairs is not None:
            out = CandidateBatch.from_provenance(
                _pick(self.item_ids, idx), self._pairs,
                base if self._pair_rows is None else self._pair_rows[base])  # fmt: skip
            if self._prov is not None:
                out._prov = _pick(self._prov, idx)
        else:
            out = CandidateBatch(_pick(self.item_ids, idx), _pick(self.provenance, idx))
        self._carry(out, idx, base)
        return out

    def _carry(self, out: CandidateBatch, idx: list[int], base: np.ndarray) -> None:
        if self._rows is not None:
            out._rows, out._catalogue = self._rows[base], self._catalogue
        if self._retrieval is not None:
            out._retrieval = self._retrieval[base]
        if self._best is not None:
            out._best = _pick(self._best, idx)

    def head(self, n: int) -> CandidateBatch:
        """The first ``n`` candidates: :meth:`take` of ``range(n)``, by slicing (every column
        is a prefix; no positions gathered)."""
        if n >= len(self):
            return self
        n = max(n, 0)
        if self._pairs is not None:
            out = CandidateBatch.from_provenance(
                self.item_ids[:n], self._pairs,
                np.arange(n, dtype=np.int64) if self._pair_rows is None else self._pair_rows[:n].copy())  # fmt: skip
            if self._prov is not None:
                out._prov = self._prov[:n]
        else:
            out = CandidateBatch(self.item_ids[:n], self.provenance[:n])
        if self._rows is not None:
            out._rows, out._catalogue = self._rows[:n].copy(), self._catalogue
        if self._retrieval is not None:
            out._retrieval = self._retrieval[:n].copy()
        if self._best is not None:
            out._best = self._best[:n]
        return out


class _Scored:
    """The columns a request's scored batches share (the ranker's answer, never copied)."""

    __slots__ = ("candidates", "task_columns", "utility", "task_dicts", "floats", "u", "at", "order", "nan")

    def __init__(self, candidates, task_columns, utility, task_dicts, floats=False):
        self.candidates: CandidateBatch = candidates
        self.task_columns: dict[str, list[float]] = task_columns
        self.utility: list[float] = utility
        self.task_dicts: list[dict[str, float]] | None = task_dicts
        self.floats: bool = floats
        self.u: np.ndarray | None = None
        self.at: dict[str, int] | None = None
        self.order: np.ndarray | None = None
        self.nan: bool | None = None

    def task_scores(self, r: int) -> dict[str, float]:
        """Row ``r``'s task scores."""
        if self.task_dicts is not None:
            return self.task_dicts[r]
        return {t: col[r] for t, col in self.task_columns.items()}


class ScoredBatch(Sequence[ScoredCandidate]):
    """Scored candidates as columns: the :class:`CandidateBatch` they were scored from, one
    column of calibrated probabilities per task (Python floats) and the utility column.
    ``task_dicts`` replaces the task columns for a batch built from rows whose task scores
    may differ in keys (a fallback order has none).

    A narrowed batch (:meth:`take`, :meth:`without`: what each slate step does) is a view:
    the ranker's columns and an index array into them, so a step costs an index operation,
    not a copy of every column; a column of the view is gathered only when read."""

    __slots__ = ("_base", "_index", "_cache")

    def __init__(
        self,
        candidates: CandidateBatch,
        task_columns: dict[str, list[float]],
        utility: list[float],
        task_dicts: list[dict[str, float]] | None = None,
        *,
        floats: bool = False,
    ):
        """``floats``: the builder vouches that ``utility`` and every task column are lists
        of Python ``float`` (the ranker's ``tolist()`` columns), so a reader that needs
        floats (the decision record) takes them as they are instead of checking each."""
        if len(utility) != len(candidates):
            raise ValueError(f"{len(utility)} utilities for {len(candidates)} candidates")
        self._base = _Scored(candidates, task_columns, utility, task_dicts, floats)
        self._index: np.ndarray | None = None
        self._cache: dict[str, Any] = {}

    @classmethod
    def of(cls, scored: Sequence[ScoredCandidate]) -> ScoredBatch:
        """``scored`` as a batch (itself when it already is one)."""
        if isinstance(scored, ScoredBatch):
            return scored
        rows = list(scored)
        batch = CandidateBatch([s[0] for s in rows], [tuple(s[1]) for s in rows])
        return cls(batch, {}, [s[3] for s in rows], [s[2] for s in rows])

    def _view(self, index: np.ndarray) -> ScoredBatch:
        out = object.__new__(ScoredBatch)
        out._base, out._index, out._cache = self._base, index, {}
        return out

    def _gather(self, name: str, values: list) -> list:
        if self._index is None:
            return values
        got = self._cache.get(name)
        if got is None:
            got = self._cache[name] = _pick(values, self._index.tolist())
        return got

    # ---------------------------------------------------------------- columns
    @property
    def candidates(self) -> CandidateBatch:
        if self._index is None:
            return self._base.candidates
        got = self._cache.get("candidates")
        if got is None:
            got = self._cache["candidates"] = self._base.candidates.take(self._index)
        return got

    @property
    def item_ids(self) -> list[str]:
        return self._gather("item_ids", self._base.candidates.item_ids)

    @property
    def provenance(self) -> list[tuple[Candidate, ...]]:
        return self._gather("provenance", self._base.candidates.provenance)

    @property
    def utility(self) -> list[float]:
        return self._gather("utility", self._base.utility)

    @property
    def floats(self) -> bool:
        """Whether the utility and task columns are Python floats by construction."""
        return self._base.floats

    @property
    def task_columns(self) -> dict[str, list[float]]:
        """``{task: column}`` of the batch (empty when built from rows: :attr:`task_dicts`)."""
        return {t: self.task_column(t) for t in self._base.task_columns}

    @property
    def task_dicts(self) -> list[dict[str, float]] | None:
        d = self._base.task_dicts
        return None if d is None else self._gather("task_dicts", d)

    def task_column(self, task: str) -> list[float]:
        """One task's probabilities, one per candidate of this batch."""
        return self._gather(f"task:{task}", self._base.task_columns[task])

    def utility_array(self) -> np.ndarray:
        """``(B,)`` float64 utilities."""
        base = self._base
        if base.u is None:
            base.u = np.array(base.utility, dtype=np.float64)
        return base.u if self._index is None else base.u[self._index]

    def utility_order(self) -> list[int]:
        """Positions best-first by utility, ties in batch order (a stable sort; for utilities
        that are not NaN): :meth:`utility_order_array` as a list."""
        return self.utility_order_array().tolist()

    def utility_order_array(self) -> np.ndarray:
        """:meth:`utility_order` as a ``(B,)`` int64 array (read-only). The ranker's batch is sorted once
        per request; a view whose rows keep its order (what :meth:`without` and a mask make:
        each slate step's pool) reads its order from that one: the same positions, without
        sorting again."""
        base = self._base
        order = self._base_order()
        idx = self._index
        if idx is None:
            return order
        if len(idx) > 1 and not (idx[1:] > idx[:-1]).all():  # reordered (a take by position)
            return np.argsort(-base.u[idx], kind="stable")  # type: ignore[index]
        at = np.full(len(base.utility), -1, dtype=np.int64)
        at[idx] = np.arange(len(idx))
        order = at[base.order]
        return order[order >= 0]

    def _base_order(self) -> np.ndarray:
        """The ranker's batch's utility order, sorted once per request (read-only: shared)."""
        base = self._base
        if base.order is None:
            self.utility_array()
            base.order = np.argsort(-base.u, kind="stable")  # type: ignore[operator]
            base.order.flags.writeable = False
        return base.order

    def utility_has_nan(self) -> bool:
        """Whether a utility of this batch is NaN (the ranker's column is checked once per
        request: a view of a batch without NaN has none)."""
        base = self._base
        if base.nan is None:
            # The order is wanted next anyway, and a sort puts NaN last: one value to look at.
            order = self._base_order()
            base.nan = bool(len(order)) and bool(np.isnan(base.u[order[-1]]))  # type: ignore[index]
        if not base.nan or self._index is None:
            return base.nan
        return bool(np.isnan(self.utility_array()).any())

    def rows(self, catalogue: Any) -> np.ndarray:
        """``(B,)`` catalogue rows (:meth:`CandidateBatch.rows`, looked up once per request)."""
        rows = self._base.candidates.rows(catalogue)
        return rows if self._index is None else rows[self._index]

    def best_sources(self) -> list[str]:
        return self._gather("best", self._base.candidates.best_sources())

    def best_source_codes(self) -> tuple[np.ndarray, list[str]]:
        """:meth:`best_sources` as ``(B,)`` int64 codes into distinct names."""
        codes, names = self._base.candidates.best_source_codes()
        return (codes if self._index is None else codes[self._index]), names

    def positions_in(self, merged: CandidateBatch) -> np.ndarray | None:
        """:meth:`CandidateBatch.positions_in` of this batch's candidates."""
        at = self._base.candidates.positions_in(merged)
        return at if at is None or self._index is None else at[self._index]

    def task_scores(self, i: int) -> dict[str, float]:
        return self._base.task_scores(i if self._index is None else int(self._index[i]))

    # ---------------------------------------------------------------- the row view
    def __len__(self) -> int:
        return len(self._base.utility) if self._index is None else len(self._index)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        base = self._base
        if i < 0:
            i += len(self)
        r = i if self._index is None else int(self._index[i])
        if not 0 <= r < len(base.utility):
            raise IndexError(i)
        c = base.candidates
        return ScoredCandidate(c.item_ids[r], c.provenance_of(r), base.task_scores(r), base.utility[r])

    def __iter__(self) -> Iterator[ScoredCandidate]:
        return (self[i] for i in range(len(self)))

    def rows_at(self, positions: Sequence[int]) -> list[ScoredCandidate]:
        """``[self[i] for i in positions]`` (positions in ``0..len-1``), their provenance read
        in one go (:meth:`CandidateBatch.provenance_at`): what a slate step places."""
        base = self._base
        at = list(positions) if self._index is None else self._index[list(positions)].tolist()
        c = base.candidates
        prov = c.provenance_at(at)
        ids, utility = c.item_ids, base.utility
        return [ScoredCandidate(ids[r], pr, base.task_scores(r), utility[r])
                for r, pr in zip(at, prov, strict=True)]  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ScoredBatch({len(self)} candidates)"

    # ---------------------------------------------------------------- narrowing
    def take(self, selector: Any) -> ScoredBatch:
        """The scored candidates at ``selector`` (positions or a ``(B,)`` bool mask): a view."""
        sel = np.asarray(selector)
        if sel.dtype == bool:
            if len(sel) != len(self):
                raise ValueError(f"mask of {len(sel)} for a batch of {len(self)}")
            sel = np.flatnonzero(sel)
        sel = sel.astype(np.int64, copy=False)
        return self._view(sel if self._index is None else self._index[sel])

    def drop(self, positions: Sequence[int]) -> ScoredBatch:
        """This batch less the candidates at ``positions`` (a view, in this batch's order):
        :meth:`without` for a step that knows its picks' positions (no id lookup)."""
        if not len(positions):
            return self
        keep = np.ones(len(self), dtype=bool)
        keep[np.asarray(positions, dtype=np.int64)] = False
        return self._view(np.flatnonzero(keep) if self._index is None else self._index[keep])

    def without(self, item_ids: Any) -> ScoredBatch:
        """This batch less the candidates whose ids are in ``item_ids`` (a set)."""
        if not item_ids:
            return self
        base = self._base
        if base.at is None:
            base.at = {item: r for r, item in enumerate(base.candidates.item_ids)}
        drop = [r for r in map(base.at.get, item_ids) if r is not None]
        if not drop:
            return self
        keep = np.ones(len(base.utility), dtype=bool)
        keep[drop] = False
        if self._index is None:
            return self._view(np.flatnonzero(keep))
        return self._view(self._index[keep[self._index]])
