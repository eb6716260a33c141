"""Shared helpers for eligibility rules (see :class:`core.contracts.EligibilityRule`).

Every rule keeps candidates in input order, records one :class:`Removal` with a stable reason
code for every candidate it drops, and raises :class:`PolicyUnavailable` when the data it
judges by is missing: a rule that cannot look never says yes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from itertools import compress
from typing import Any

import numpy as np

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query, Removal

Drops = list[tuple[int, str]]
"""What a rule judged: the positions (ascending) of the candidates it drops, each with its
reason code."""


class JudgingRule:
    """A rule written as :meth:`judge` over the request's :class:`CandidateBatch`, which the
    :class:`ranking.rules.chain.RuleChain` calls on the whole batch and combines as masks (one
    narrowing for the chain, not one per rule); :meth:`apply` is the row contract on top."""

    name: str

    def judge(self, query: Query, batch: CandidateBatch, user_state: Any) -> Drops:
        raise NotImplementedError

    def apply(
        self, query: Query, candidates: Sequence[MergedCandidate], user_state: Any
    ) -> FilterResult:
        batch = CandidateBatch.of(candidates)
        return filter_result(self.name, batch, self.judge(query, batch, user_state))


def filter_result(rule: str, candidates: Sequence[MergedCandidate], drops: Drops) -> FilterResult:
    """``candidates`` less ``drops``: ``kept`` a :class:`CandidateBatch`, one removal each."""
    batch = CandidateBatch.of(candidates)
    if not drops:
        return FilterResult(kept=batch, removed=[])
    ids = batch.item_ids
    keep = np.ones(len(ids), dtype=bool)
    keep[[i for i, _ in drops]] = False
    removed = [Removal(item_id=ids[i], rule=rule, reason=why) for i, why in drops]
    return FilterResult(kept=batch.take(keep), removed=removed)


def drops_where(
    candidates: Sequence[MergedCandidate],
    reason_of: Callable[[MergedCandidate], str | None],
    only: Collection[str] | None = None,
) -> Drops:
    """Drop candidates whose ``reason_of`` is not ``None``. ``only``: the item ids
    ``reason_of`` can say anything about (every other candidate is kept without a call): a
    rule judging by a set of ids asks about a handful, not hundreds."""
    batch = CandidateBatch.of(candidates)
    ids = batch.item_ids
    if only is not None:
        # membership mapped in C: an id-set rule asks about a handful of hundreds
        hits = list(compress(range(len(ids)), map(only.__contains__, ids))) if only else []
    else:
        hits = range(len(ids))
    out: Drops = []
    for i in hits:
        reason = reason_of(batch[i])
        if reason is not None:
            out.append((i, reason))
    return out


def drops_by_id(
    batch: CandidateBatch,
    reason_of: Callable[[str], str | None],
    only: Collection[str],
    catalogue: Catalogue | None = None,
) -> Drops:
    """:func:`drops_where` for a rule that judges by item id alone: ``reason_of`` gets the id,
    so no candidate row is built for the handful of ids in ``only`` it is asked about.
    ``catalogue``: where the batch's rows are read (:func:`_hits_by_row`) instead of asking
    about every id."""
    if not only:
        return []
    ids = batch.item_ids
    # By row when that is cheaper: a table of one byte per catalogue row is zeroed per call
    # (hundreds of rows cost about what one id's set lookup does).
    if catalogue is not None and len(only) < len(ids) and len(catalogue) <= 256 * len(ids):
        hits: Any = _hits_by_row(batch, only, catalogue)
    else:
        hits = compress(range(len(ids)), map(only.__contains__, ids))
    out: Drops = []
    for i in hits:
        reason = reason_of(ids[i])
        if reason is not None:
            out.append((i, reason))
    return out


def _hits_by_row(batch: CandidateBatch, only: Collection[str], catalogue: Catalogue) -> list[int]:
    """The positions (ascending) of the batch's items in ``only``, found by catalogue row (one
    row is one item): the ids of ``only`` looked up and marked in a table by row, the batch's
    rows (looked up once per batch, shared by the rules) read from it; only ids outside the
    catalogue are asked about by id."""
    rows = batch.rows(catalogue)
    marked = np.zeros(len(catalogue) + 1, dtype=bool)  # the last entry stands for row -1
    marked[catalogue.index_of(list(only))] = True
    marked[-1] = False
    hit = marked[rows]
    unknown = np.flatnonzero(rows < 0)
    if len(unknown):
        ids = batch.item_ids
        hit[unknown] = [ids[i] in only for i in unknown.tolist()]
    return np.flatnonzero(hit).tolist()


def drops_mask(
    keep: np.ndarray,
    reason: str,
    unknown: np.ndarray | None = None,
    reason_of_mask: tuple[np.ndarray, str] | None = None,
) -> Drops:
    """Drop where the ``(B,)`` bool ``keep`` is false, with ``reason``, or
    ``not_in_catalogue`` where ``unknown`` is set, or ``reason_of_mask[1]`` where
    ``reason_of_mask[0]`` is. Nothing dropped (the common case) costs one array check."""
    if keep.all():
        return []
    drop = np.flatnonzero(~keep)
    at = drop.tolist()
    if unknown is not None and not unknown.any():
        unknown = None
    if unknown is None and reason_of_mask is None:  # one reason for all (the common case)
        return [(i, reason) for i in at]
    # Each dropped position's reason from the masks read at the drops only (no numpy
    # scalar per candidate).
    unk = unknown[drop].tolist() if unknown is not None else [False] * len(at)
    other = reason_of_mask[0][drop].tolist() if reason_of_mask is not None else [False] * len(at)
    alt = reason_of_mask[1] if reason_of_mask is not None else reason
    return [(i, "not_in_catalogue" if u else alt if o else reason)
            for i, u, o in zip(at, unk, other, strict=True)]  # fmt: skip


def partition(
    rule: str,
    candidates: Sequence[MergedCandidate],
    reason_of: Callable[[MergedCandidate], str | None],
    only: Collection[str] | None = None,
) -> FilterResult:
    """Keep candidates whose ``reason_of`` is ``None``; remove the rest with that reason
    (:func:`drops_where`)."""
    return filter_result(rule, candidates, drops_where(candidates, reason_of, only))


def partition_mask(
    rule: str,
    candidates: Sequence[MergedCandidate],
    keep: np.ndarray,
    reason: str,
    unknown: np.ndarray | None = None,
) -> FilterResult:
    """:func:`partition` from a ``(B,)`` bool ``keep`` mask (:func:`drops_mask`)."""
    return filter_result(rule, candidates, drops_mask(keep, reason, unknown))


def require_catalogue(rule: str, catalogue: Catalogue | None, query: Query) -> Catalogue:
    if catalogue is None:
        raise PolicyUnavailable(f"{rule}: catalogue not loaded")
    if catalogue.tenant_id != query.tenant_id:
        # Judging one tenant's items by another tenant's catalogue would be meaningless.
        raise PolicyUnavailable(
            f"{rule}: catalogue is tenant {catalogue.tenant_id!r}, request is {query.tenant_id!r}"
        )
    return catalogue


def rows_in(catalogue: Catalogue | None, query: Query) -> Catalogue | None:
    """``catalogue`` when a rule judging by id may find the request's candidates by row in
    it (:func:`drops_by_id`): the request's tenant's, else ``None`` (by id)."""
    return catalogue if catalogue is not None and catalogue.tenant_id == query.tenant_id else None


def catalogue_rows(catalogue: Catalogue, candidates: Sequence[MergedCandidate]) -> np.ndarray:
    """``(B,)`` catalogue rows of the candidates (``-1``: unknown), looked up once per batch."""
    return CandidateBatch.of(candidates).rows(catalogue)
