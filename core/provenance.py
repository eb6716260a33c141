"""Where candidates came from, as columns: one source's answer, and every (candidate, source)
pair of a merged request.

A request's five sources propose ≈ 700 items. Held as one :class:`core.contracts.Candidate`
tuple per item, the sources built them, the merge took them apart again and the decision
record read them field by field. :class:`SourceColumns` is a source's answer as columns
(item ids, scores, ranks; one source name and version) and :class:`Provenance` the merged
request's pairs as columns, so the merge, the ranker's features and the record work on arrays.

Both are also read-only ``Sequence`` views of the :class:`Candidate` rows (a source answer's
``candidates``; a merged candidate's ``provenance``), built on access: code written against the
row contract (a plug-in source, a test) works unchanged.

Invariants: columns are never mutated; every column has one entry per candidate (per pair),
in the same order; ranks are 0-based ints; scores are float64.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from core.contracts import _NO_DIAGNOSTICS, Candidate


class SourceColumns(Sequence[Candidate]):
    """One source's answer, best first, as columns: ``item_ids``, ``scores`` (``(n,)``
    float64), ``ranks`` (``(n,)`` int64, ``0..n-1`` unless sliced from a longer answer), the
    one ``source`` and ``version``, and per-item ``diagnostics`` (``None``: none)."""

    __slots__ = ("item_ids", "scores", "ranks", "source", "version", "diagnostics", "rows", "catalogue")

    def __init__(
        self,
        source: str,
        version: str,
        item_ids: Sequence[str],
        scores: Any,
        diagnostics: Sequence[Mapping[str, Any]] | None = None,
        ranks: np.ndarray | None = None,
        *,
        rows: np.ndarray | None = None,
        catalogue: Any = None,
    ):
        """``rows``: the items' ``(n,)`` int64 rows in ``catalogue`` (``-1``: not in it),
        when the source found them by row (an index search, a catalogue scan): the merge
        carries them to the rules and the ranker instead of looking every id up again."""
        self.item_ids = list(item_ids)
        self.scores = np.asarray(scores, dtype=np.float64)
        n = len(self.item_ids)
        if self.scores.shape != (n,):
            raise ValueError(f"{source}: {n} item ids but scores of shape {self.scores.shape}")
        self.ranks = np.arange(n, dtype=np.int64) if ranks is None else ranks
        if diagnostics is not None and len(diagnostics) != n:
            raise ValueError(f"{source}: {n} item ids but {len(diagnostics)} diagnostics")
        self.source = source
        self.version = version
        self.diagnostics = None if diagnostics is None else list(diagnostics)
        if rows is not None and (catalogue is None or len(rows) != n):
            raise ValueError(f"{source}: rows need their catalogue and one row per item")
        self.rows = rows
        self.catalogue = catalogue if rows is not None else None

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            d = self.diagnostics
            return SourceColumns(self.source, self.version, self.item_ids[i], self.scores[i],
                                 None if d is None else d[i], self.ranks[i],
                                 rows=None if self.rows is None else self.rows[i], catalogue=self.catalogue)  # fmt: skip
        d = _NO_DIAGNOSTICS if self.diagnostics is None else (self.diagnostics[i] or _NO_DIAGNOSTICS)
        return Candidate(self.item_ids[i], self.source, self.version, float(self.scores[i]),
                         int(self.ranks[i]), d)  # fmt: skip

    def __iter__(self) -> Iterator[Candidate]:
        d = (repeat(_NO_DIAGNOSTICS) if self.diagnostics is None
             else (x or _NO_DIAGNOSTICS for x in self.diagnostics))  # fmt: skip
        return map(Candidate._make, zip(self.item_ids, repeat(self.source), repeat(self.version),
                                        self.scores.tolist(), self.ranks.tolist(), d))  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SourceColumns({self.source!r}, {len(self)} candidates)"


def as_columns(candidates: Sequence[Candidate]) -> tuple[list[str], list[str], list[str], np.ndarray, np.ndarray, list | None]:  # fmt: skip
    """``(item_ids, sources, versions, scores, ranks, diagnostics)`` of any candidates: read
    from :class:`SourceColumns` without a row each, else field by field."""
    if isinstance(candidates, SourceColumns):
        n = len(candidates)
        return (candidates.item_ids, [candidates.source] * n, [candidates.version] * n,
                candidates.scores, candidates.ranks, candidates.diagnostics)  # fmt: skip
    rows = list(candidates)
    if not rows:
        return [], [], [], np.zeros(0), np.zeros(0, dtype=np.int64), None
    ids, src, ver, score, rank, diag = (list(col) for col in zip(*rows, strict=True))
    return (ids, src, ver, np.array(score, dtype=np.float64), np.array(rank, dtype=np.int64),
            None if all(d is _NO_DIAGNOSTICS for d in diag) else diag)  # fmt: skip


def gather(values: list, idx: list[int]) -> list:
    """``[values[i] for i in idx]``, in C."""
    if not idx:
        return []
    if len(idx) == 1:
        return [values[idx[0]]]
    return list(itemgetter(*idx)(values))


_FEW_ROWS = 32
"""At most this many rows read at once (and no row lists made yet): :meth:`Provenance.rows_of`
reads them as arrays."""


class Provenance:
    """Every (candidate, source) pair of a merged request as columns, in the order the
    sources answered: ``row[p]`` is the merged candidate pair ``p`` belongs to, ``source``,
    ``version``, ``score`` and ``rank`` what that source said. A merged batch and every
    narrowing of it share one (see :class:`core.candidates.CandidateBatch`)."""

    __slots__ = ("row", "source", "version", "score", "rank", "diagnostics", "n_rows",
                 "_by_row", "_starts", "_source_arr", "_best", "_retrieval", "_lists", "_codes",
                 "_best_codes")  # fmt: skip

    def __init__(self, n_rows: int, row: np.ndarray, source: list[str], version: list[str],
                 score: np.ndarray, rank: np.ndarray, diagnostics: list | None = None,
                 source_codes: tuple[np.ndarray, list[str]] | None = None):  # fmt: skip
        """``source_codes``: ``(codes, names)``, distinct ``names`` and ``(P,)`` int64 codes
        with ``source[p] == names[codes[p]]``, when the builder has them (the merge: one code
        per source's answer), so that per-row source work runs on ints."""
        self._codes = source_codes
        self._best_codes: tuple[np.ndarray, list[str]] | None = None
        self.n_rows = n_rows
        self.row = row
        self.source = source
        self.version = version
        self.score = score
        self.rank = rank
        self.diagnostics = diagnostics
        self._by_row: np.ndarray | None = None
        self._starts: np.ndarray | None = None  # (n_rows + 1,) where each row's pairs start in by_row
        self._source_arr: np.ndarray | None = None
        self._best: list[str] | None = None
        self._retrieval: dict[str, np.ndarray] = {}
        self._lists: tuple[list[int], list[int], list[float], list[int]] | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Candidate]]) -> Provenance:
        """The pairs of merged candidates given as rows (each one's provenance tuple: a batch
        a plug-in or a test built from rows), so their columns are computed as the merge's."""
        counts = [len(p) for p in rows]
        row = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
        flat = [c for p in rows for c in p]
        if not flat:
            return cls(len(rows), row, [], [], np.zeros(0), np.zeros(0, dtype=np.int64))
        _, src, ver, score, rank, diag = (list(col) for col in zip(*flat, strict=True))
        return cls(len(rows), row, src, ver, np.array(score, dtype=np.float64), np.array(rank, dtype=np.int64),
                   None if all(d is _NO_DIAGNOSTICS for d in diag) else diag)  # fmt: skip

    def __len__(self) -> int:
        return len(self.source)

    def by_row(self) -> np.ndarray:
        """``(P,)`` pair positions ordered by row, then in the order the sources answered."""
        if self._by_row is None:
            # A stable sort has one answer: int16 rows where they fit sort by radix (≈ 2x).
            small = self.n_rows <= np.iinfo(np.int16).max
            self._by_row = np.argsort(self.row.astype(np.int16) if small else self.row, kind="stable")
            starts = np.zeros(self.n_rows + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.row, minlength=self.n_rows), out=starts[1:])
            self._starts = starts
        return self._by_row

    def source_array(self) -> np.ndarray:
        if self._source_arr is None:
            self._source_arr = np.array(self.source, dtype=object)
        return self._source_arr

    def rows_of(self, item_ids: list[str], rows: list[int]) -> list[tuple[Candidate, ...]]:
        """The provenance tuples of ``rows`` (rows of this pair table, items ``item_ids``).

        A few rows (a slate step's placements) are read through their pair positions, as
        arrays (a few array operations whatever the count); many rows through every pair's
        fields as lists, made once per pair table (:meth:`_as_lists`)."""
        diag = self.diagnostics
        src, ver = self.source, self.version
        out = []
        if self._lists is None and len(rows) <= _FEW_ROWS:
            if len(rows) == 1:  # one row (an exploration pick): its pairs, by a scan
                at = np.flatnonzero(self.row == rows[0])
                counts = [len(at)]
            else:
                at, n = self._positions(np.asarray(rows, dtype=np.int64))
                counts = n.tolist()
            pos, score, rank = at.tolist(), self.score[at].tolist(), self.rank[at].tolist()
            k = 0
            for item, c in zip(item_ids, counts, strict=True):
                out.append(tuple(
                    Candidate(item, src[p], ver[p], score[j], rank[j],
                              _NO_DIAGNOSTICS if diag is None else (diag[p] or _NO_DIAGNOSTICS))
                    for j, p in enumerate(pos[k : k + c], k)))  # fmt: skip
                k += c
            return out
        starts, by_row, score, rank = self._as_lists()
        for item, r in zip(item_ids, rows, strict=True):
            out.append(tuple(
                Candidate(item, src[p], ver[p], score[p], rank[p],
                          _NO_DIAGNOSTICS if diag is None else (diag[p] or _NO_DIAGNOSTICS))
                for p in by_row[starts[r]:starts[r + 1]]))  # fmt: skip
        return out

    def _as_lists(self) -> tuple[list[int], list[int], list[float], list[int]]:
        """Row starts, pairs by row, scores and ranks as Python lists, once per pair table: a
        row read (a slate's pick, one at a time) is then list indexing, not numpy scalars."""
        if self._lists is None:
            order = self.by_row()
            self._lists = (self._starts.tolist(), order.tolist(),  # type: ignore[union-attr]
                           self.score.tolist(), self.rank.tolist())  # fmt: skip
        return self._lists

    def retrieval_scores(self, source: str) -> np.ndarray:
        """``(n_rows,)`` float32: the first score ``source`` gave each row, NaN where none.
        Computed once per source (read-only: every batch over these pairs shares it)."""
        out = self._retrieval.get(source)
        if out is None:
            out = np.full(self.n_rows, np.nan, dtype=np.float32)
            hit = np.flatnonzero(self.source_array() == source)
            if len(hit):
                rows, first = np.unique(self.row[hit], return_index=True)
                out[rows] = self.score[hit[first]].astype(np.float32)
            out.flags.writeable = False
            self._retrieval[source] = out
        return out

    def best_sources(self, rows: np.ndarray | None = None) -> list[str]:
        """Each row's best pair's source: lowest rank, then highest score, then the first
        answered (``min`` over the row's provenance by ``(rank, -score)``). ``rows``: only
        these rows, in this order (a narrowed batch's). Every row's list is computed once
        (every batch over these pairs shares it: do not change it); with the merge's source
        codes, a narrowed batch's names are read from the codes of its rows alone."""
        if rows is not None and self._codes is not None:
            codes, names = self.best_source_codes()
            return gather(names, codes[rows].tolist())
        if self._best is None:
            self._best = self._best_sources()
        return self._best if rows is None else gather(self._best, rows.tolist())

    def source_codes(self) -> tuple[np.ndarray, list[str]]:
        """``(codes, names)``: distinct ``names``, ``(P,)`` int64 ``codes`` into them."""
        if self._codes is None:
            names = list(dict.fromkeys(self.source))
            index = {name: k for k, name in enumerate(names)}
            self._codes = (np.fromiter(map(index.__getitem__, self.source), np.int64, len(self.source)), names)
        return self._codes

    def best_source_codes(self) -> tuple[np.ndarray, list[str]]:
        """:meth:`best_sources` as ``(codes, names)``: ``(n_rows,)`` int64 codes into the
        distinct ``names``, ``""`` among them (a row without pairs). Computed once."""
        if self._best_codes is None:
            code, names = self.source_codes()
            if "" not in names:
                names = [*names, ""]
            out = np.full(self.n_rows, names.index(""), dtype=np.int64)
            best = self._best_pairs()
            has = best >= 0
            out[has] = code[best[has]]
            self._best_codes = (out, names)
        return self._best_codes

    def _best_sources(self) -> list[str]:
        if self._codes is not None:  # the merge's codes: the rows' best as ints, then names
            codes, names = self.best_source_codes()
            return gather(names, codes.tolist())
        out = np.full(self.n_rows, "", dtype=object)
        if not len(self):
            return out.tolist()
        best = self._best_pairs()
        has = best >= 0
        out[has] = self.source_array()[best[has]]
        return out.tolist()

    def _best_pairs(self) -> np.ndarray:
        """Per row, the position of its best pair (highest score, then lowest rank, then the
        first answered), -1 for a row without pairs."""
        best = np.full(self.n_rows, -1, dtype=np.int64)
        if not len(self):
            return best
        alone = np.bincount(self.row, minlength=self.n_rows)[self.row] == 1
        one = np.flatnonzero(alone)
        best[self.row[one]] = one  # most rows have one pair: it is the best
        several = np.flatnonzero(~alone)
        if len(several):
            o = several[np.lexsort((several, -self.score[several], self.rank[several], self.row[several]))]
            r = self.row[o]
            first = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1])))
            best[r[first]] = o[first]
        return best

    def _positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs of ``rows`` (in that order; each row's in the order answered) as
        positions into the pair columns, and how many pairs each row has."""
        order = self.by_row()
        starts = self._starts
        lo, n = starts[rows], starts[rows + 1] - starts[rows]  # type: ignore[index]
        total = int(n.sum())
        return order[np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(total)], n

    def table(self, rows: np.ndarray | None = None) -> tuple[list[int], list[str], list[str], list[float], list[int]]:  # fmt: skip
        """The record's provenance columns: pairs by row, then in the order answered.
        ``rows``: only these rows, in this order, numbered ``0..len(rows)-1`` (a narrowed
        batch's)."""
        if rows is None:
            order = self.by_row()
            row = self.row[order]
        else:
            order, n = self._positions(np.asarray(rows, dtype=np.int64))
            row = np.repeat(np.arange(len(n)), n)
        idx = order.tolist()
        return (row.tolist(), gather(self.source, idx), gather(self.version, idx),
                self.score[order].tolist(), self.rank[order].tolist())  # fmt: skip

    def sources_of(self, rows: np.ndarray) -> list[tuple[str, ...]]:
        """Each of ``rows``' distinct sources in the order they answered (a slate item's
        ``sources``), without building its provenance tuple."""
        at, n = self._positions(np.asarray(rows, dtype=np.int64))
        names = gather(self.source, at.tolist())
        out: list[tuple[str, ...]] = []
        k = 0
        for c in n.tolist():
            out.append((names[k],) if c == 1 else tuple(dict.fromkeys(names[k : k + c])))
            k += c
        return out
