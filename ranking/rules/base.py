"""Shared helpers for eligibility rules (see :class:`core.contracts.EligibilityRule`).

Every rule keeps candidates in input order, records one :class:`Removal` with a stable reason
code for every candidate it drops, and raises :class:`PolicyUnavailable` when the data it
judges by is missing: a rule that cannot look never says yes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

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
    kept without a call): a rule judging by a set of ids asks about a handful, not hundreds."""
    if only is not None:
        hits = [c.item_id in only for c in candidates] if only else []
        if not any(hits):  # the common case: nothing here to judge
            return FilterResult(kept=list(candidates), removed=[])
        kept, removed = [], []
        for c, hit in zip(candidates, hits, strict=True):
            reason = reason_of(c) if hit else None
            if reason is None:
                kept.append(c)
            else:
                removed.append(Removal(item_id=c.item_id, rule=rule, reason=reason))
        return FilterResult(kept=kept, removed=removed)
    kept: list[MergedCandidate] = []
    removed: list[Removal] = []
    for c in candidates:
        reason = reason_of(c)
        if reason is None:
            kept.append(c)
        else:
            removed.append(Removal(item_id=c.item_id, rule=rule, reason=reason))
    return FilterResult(kept=kept, removed=removed)


def partition_mask(
    rule: str,
    candidates: Sequence[MergedCandidate],
    keep: np.ndarray,
    reason: str,
    unknown: np.ndarray | None = None,
) -> FilterResult:
    """:func:`partition` from a ``(B,)`` bool ``keep`` mask: dropped candidates get ``reason``,
    or ``not_in_catalogue`` where ``unknown`` (``(B,)`` bool) is set. The common case, nothing
    dropped, costs one array check."""
    if keep.all():
        return FilterResult(kept=list(candidates), removed=[])
    kept: list[MergedCandidate] = []
    removed: list[Removal] = []
    for i, (c, k) in enumerate(zip(candidates, keep.tolist(), strict=True)):
        if k:
            kept.append(c)
        else:
            why = "not_in_catalogue" if unknown is not None and unknown[i] else reason
            removed.append(Removal(item_id=c.item_id, rule=rule, reason=why))
    return FilterResult(kept=kept, removed=removed)


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
    return catalogue.index_of([c.item_id for c in candidates])
