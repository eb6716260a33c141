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
from operator import itemgetter
from typing import Any

import numpy as np

from core.contracts import Candidate, MergedCandidate, ScoredCandidate

RETRIEVAL_SCORE_SOURCE = "two_tower"
"""The source whose score is the ranker's ``retrieval_score`` feature (see
:mod:`ranking.scorer`)."""

_NAN = float("nan")


def _pick(values: list, idx: list[int]) -> list:
    if not idx:
        return []
    if len(idx) == 1:
        return [values[idx[0]]]
    return list(itemgetter(*idx)(values))


def _indices(selector: Any, n: int) -> list[int]:
    """``selector`` as a list of positions: a ``(n,)`` bool mask or positions already."""
    arr = np.asarray(selector)
    if arr.dtype == bool:
        if len(arr) != n:
            raise ValueError(f"mask of {len(arr)} for a batch of {n}")
        return np.flatnonzero(arr).tolist()
    return arr.astype(np.int64, copy=False).tolist()


def _best_key(c: Candidate) -> tuple[int, float]:
    return c.rank, -c.score


class CandidateBatch(Sequence[MergedCandidate]):
    """Merged candidates as columns (see the module docstring). ``provenance[i]`` is every
    source's :class:`Candidate` for ``item_ids[i]``, in the order the sources answered."""

    __slots__ = ("item_ids", "provenance", "_rows", "_catalogue", "_retrieval", "_best")

    def __init__(self, item_ids: list[str], provenance: list[tuple[Candidate, ...]]):
        if len(item_ids) != len(provenance):
            raise ValueError(f"{len(item_ids)} item ids but {len(provenance)} provenance rows")
        self.item_ids = item_ids
        self.provenance = provenance
        self._rows: np.ndarray | None = None
        self._catalogue: Any = None
        self._retrieval: np.ndarray | None = None
        self._best: list[str] | None = None

    @classmethod
    def of(cls, candidates: Sequence[MergedCandidate]) -> CandidateBatch:
        """``candidates`` as a batch (itself when it already is one)."""
        if isinstance(candidates, CandidateBatch):
            return candidates
        if isinstance(candidates, ScoredBatch):
            return candidates.candidates
        items = list(candidates)
        return cls([c[0] for c in items], [tuple(c[1]) for c in items])

    # ---------------------------------------------------------------- the row view
    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(len(self.item_ids))[i])
        return MergedCandidate(self.item_ids[i], self.provenance[i])

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
            self._columns()
        return self._retrieval  # type: ignore[return-value]

    def best_sources(self) -> list[str]:
        """The source of each candidate's best (lowest rank, then highest score) provenance
        entry (:attr:`MergedCandidate.best`)."""
        if self._best is None:
            self._columns()
        return self._best  # type: ignore[return-value]

    def _columns(self) -> None:
        scores: list[float] = []
        sources: list[str] = []
        for prov in self.provenance:  # one pass; most candidates have one source
            if len(prov) == 1:
                p = prov[0]
                sources.append(p.source)
                scores.append(p.score if p.source == RETRIEVAL_SCORE_SOURCE else _NAN)
                continue
            if not prov:
                scores.append(_NAN)
                sources.append("")
                continue
            score = _NAN
            for p in prov:
                if p.source == RETRIEVAL_SCORE_SOURCE:
                    score = p.score
                    break
            scores.append(score)
            sources.append(min(prov, key=_best_key).source)
        self._retrieval = np.array(scores, dtype=np.float32)
        self._best = sources

    # ---------------------------------------------------------------- narrowing
    def take(self, selector: Any) -> CandidateBatch:
        """The candidates at ``selector`` (positions, or a ``(B,)`` bool mask), in that order;
        columns already computed come along."""
        idx = _indices(selector, len(self))
        out = CandidateBatch(_pick(self.item_ids, idx), _pick(self.provenance, idx))
        self._carry(out, idx)
        return out

    def _carry(self, out: CandidateBatch, idx: list[int]) -> None:
        if self._rows is not None:
            out._rows, out._catalogue = self._rows[idx], self._catalogue
        if self._retrieval is not None:
            out._retrieval = self._retrieval[idx]
            out._best = _pick(self._best, idx)  # type: ignore[arg-type]

    def head(self, n: int) -> CandidateBatch:
        """The first ``n`` candidates."""
        return self if n >= len(self) else self.take(range(n))


class ScoredBatch(Sequence[ScoredCandidate]):
    """Scored candidates as columns: the :class:`CandidateBatch` they were scored from, one
    column of calibrated probabilities per task (Python floats) and the utility column.
    ``task_rows[i]`` is candidate ``i``'s row in the task columns (``None``: the same row), so
    narrowing a batch never copies the task columns. ``task_dicts`` replaces the task columns
    for a batch built from rows whose task scores may differ in keys (a fallback order has
    none)."""

    __slots__ = ("candidates", "task_columns", "utility", "task_dicts", "task_rows", "_u")

    def __init__(
        self,
        candidates: CandidateBatch,
        task_columns: dict[str, list[float]],
        utility: list[float],
        task_dicts: list[dict[str, float]] | None = None,
        task_rows: list[int] | None = None,
    ):
        if len(utility) != len(candidates):
            raise ValueError(f"{len(utility)} utilities for {len(candidates)} candidates")
        self.candidates = candidates
        self.task_columns = task_columns
        self.utility = utility
        self.task_dicts = task_dicts
        self.task_rows = task_rows
        self._u: np.ndarray | None = None

    @classmethod
    def of(cls, scored: Sequence[ScoredCandidate]) -> ScoredBatch:
        """``scored`` as a batch (itself when it already is one)."""
        if isinstance(scored, ScoredBatch):
            return scored
        rows = list(scored)
        batch = CandidateBatch([s[0] for s in rows], [tuple(s[1]) for s in rows])
        return cls(batch, {}, [s[3] for s in rows], [s[2] for s in rows])

    @property
    def item_ids(self) -> list[str]:
        return self.candidates.item_ids

    @property
    def provenance(self) -> list[tuple[Candidate, ...]]:
        return self.candidates.provenance

    def utility_array(self) -> np.ndarray:
        """``(B,)`` float64 utilities."""
        if self._u is None:
            self._u = np.array(self.utility, dtype=np.float64)
        return self._u

    def task_scores(self, i: int) -> dict[str, float]:
        r = i if self.task_rows is None else self.task_rows[i]
        if self.task_dicts is not None:
            return self.task_dicts[r]
        return {t: col[r] for t, col in self.task_columns.items()}

    def task_column(self, task: str) -> list[float]:
        """One task's probabilities, one per candidate of this batch."""
        col = self.task_columns[task]
        return col if self.task_rows is None else _pick(col, self.task_rows)

    def __len__(self) -> int:
        return len(self.utility)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        c = self.candidates
        return ScoredCandidate(c.item_ids[i], c.provenance[i], self.task_scores(i), self.utility[i])

    def __iter__(self) -> Iterator[ScoredCandidate]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ScoredBatch({len(self)} candidates)"

    def take(self, selector: Any) -> ScoredBatch:
        """The scored candidates at ``selector`` (positions or a ``(B,)`` bool mask)."""
        idx = _indices(selector, len(self))
        out = ScoredBatch(
            self.candidates.take(idx),
            self.task_columns,
            _pick(self.utility, idx),
            self.task_dicts,
            idx if self.task_rows is None else _pick(self.task_rows, idx),
        )
        if self._u is not None:
            out._u = self._u[idx]
        return out

    def without(self, item_ids: Any) -> ScoredBatch:
        """This batch less the candidates whose ids are in ``item_ids`` (a set)."""
        if not item_ids:
            return self
        return self.take([i for i, item in enumerate(self.item_ids) if item not in item_ids])
