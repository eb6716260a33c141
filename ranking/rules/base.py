"""Shared helpers for eligibility rules (see :class:`core.contracts.EligibilityRule`).

Every rule keeps candidates in input order, records one :class:`Removal` with a stable reason
code for every candidate it drops, and raises :class:`PolicyUnavailable` when the data it
judges by is missing: a rule that cannot look never says yes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

from core.candidates import CandidateBatch
from core.catalogue import Catalogue
from core.contracts import FilterResult, MergedCandidate, PolicyUnavailable, Query, Removal


def partition(
    rule: str,
    candidates: Sequence[MergedCandidate],
    reason_of: Callable[[MergedCandidate], str | None],
    only: Collection[str] | None = None,
) -> FilterResult:
    """Keep candidates whose ``reason_of`` is ``None``; remove the rest with that reason.
    ``only``: the item ids ``reason_of`` can say anything about (every other candidate is
    kept without a call): a rule judging by a set of ids asks about a handful, not hundreds.
    ``kept`` is a :class:`CandidateBatch` narrowed from ``candidates``."""
    batch = CandidateBatch.of(candidates)
    ids = batch.item_ids
    if only is not None:
        hits = [i for i, item in enumerate(ids) if item in only] if only else []
    else:
        hits = range(len(ids))
    if not hits:  # the common case for an id-set rule: nothing here to judge
        return FilterResult(kept=batch, removed=[])
    drop: list[int] = []
    removed: list[Removal] = []
    for i in hits:
        reason = reason_of(batch[i])
        if reason is not None:
            drop.append(i)
            removed.append(Removal(item_id=ids[i], rule=rule, reason=reason))
    if not drop:
        return FilterResult(kept=batch, removed=[])
    keep = np.ones(len(ids), dtype=bool)
    keep[drop] = False
    return FilterResult(kept=batch.take(keep), removed=removed)


def partition_mask(
    rule: str,
    candidates: Sequence[MergedCandidate],
    keep: np.ndarray,
    reason: str,
    unknown: np.ndarray | None = None,
    reason_of_mask: tuple[np.ndarray, str] | None = None,
) -> FilterResult:
    """:func:`partition` from a ``(B,)`` bool ``keep`` mask: dropped candidates get ``reason``,
    or ``not_in_catalogue`` where ``unknown`` (``(B,)`` bool) is set, or ``reason_of_mask[1]``
    where ``reason_of_mask[0]`` is. The common case, nothing dropped, costs one array check;
    otherwise one :meth:`CandidateBatch.take`."""
    batch = CandidateBatch.of(candidates)
    if keep.all():
        return FilterResult(kept=batch, removed=[])
    ids = batch.item_ids
    removed = []
    for i in np.flatnonzero(~keep).tolist():
        why = reason
        if unknown is not None and unknown[i]:
            why = "not_in_catalogue"
        elif reason_of_mask is not None and reason_of_mask[0][i]:
            why = reason_of_mask[1]
        removed.append(Removal(item_id=ids[i], rule=rule, reason=why))
    return FilterResult(kept=batch.take(keep), removed=removed)


def require_catalogue(rule: str, catalogue: Catalogue | None, query: Query) -> Catalogue:
    if catalogue is None:
        raise PolicyUnavailable(f"{rule}: catalogue not loaded")
    if catalogue.tenant_id != query.tenant_id:
        # Judging one tenant's items by another tenant's catalogue would be meaningless.
        raise PolicyUnavailable(
            f"{rule}: catalogue is tenant {catalogue.tenant_id!r}, request is {query.tenant_id!r}"
        )
    return catalogue


def catalogue_rows(catalogue: Catalogue, candidates: Sequence[MergedCandidate]) -> np.ndarray:
    """``(B,)`` catalogue rows of the candidates (``-1``: unknown), looked up once per batch."""
    return CandidateBatch.of(candidates).rows(catalogue)
