"""The slate under construction, and what one slate step returns.

A surface's slate is built by an ordered list of steps (``slate.steps`` in its config). Each
step sees the :class:`SlateDraft` and returns a :class:`core.contracts.FilterResult`: the
candidates it ``kept`` in the pool, the ones it ``removed`` (with a reason code, as an
eligibility rule would) and the ones it ``placed``, each a :class:`core.contracts.Placement`:

* ``slot="fixed"`` at ``position`` (pins): later steps cannot move it;
* ``slot="fill"``: the next free position, in the order placed (the ordering step);
* ``slot="tail"``: after every filled item (exploration samples).

:class:`ranking.slate.policy.SlatePolicy` runs the steps and assembles the slate: filled
items, then tail items, then each fixed item inserted at its position, cut to ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.candidates import ScoredBatch
from core.catalogue import Catalogue
from core.contracts import Placement, Query, ScoredCandidate


@dataclass(frozen=True)
class SlateContext:
    """What slate steps are built from (one per tenant)."""

    catalogue: Catalogue | None
    embedding_of: Callable[[str], np.ndarray | None] | None = None

    def category_of(self, item_id: str) -> str | None:
        return self.catalogue.category_of(item_id) if self.catalogue is not None else None

    def categories_of(self, item_ids: Sequence[str]) -> list[str | None]:
        """:meth:`category_of` of many items: one lookup pass over the catalogue's arrays."""
        if self.catalogue is None:
            return [None] * len(item_ids)
        idx = self.catalogue.index_of(item_ids)
        names = np.asarray(self.catalogue.categories, dtype=object)
        out = names[self.catalogue.category[np.maximum(idx, 0)]] if len(idx) else names[:0]
        out[idx < 0] = None
        return out.tolist()


@dataclass
class SlateDraft:
    query: Query
    user_state: Any
    pool: ScoredBatch
    """Candidates neither placed nor removed yet, in the ranker's input order (columns; a
    step narrows it with :meth:`ScoredBatch.take` / :meth:`ScoredBatch.without`, or answers
    a list of rows, which the policy turns back into a batch)."""
    fixed: list[Placement] = field(default_factory=list)
    filled: list[Placement] = field(default_factory=list)
    tail: list[Placement] = field(default_factory=list)

    @property
    def k(self) -> int:
        return self.query.k

    @property
    def free(self) -> int:
        """Positions not taken by fixed items."""
        return max(0, self.k - len(self.fixed))

    @property
    def open(self) -> int:
        """Positions still to fill: free positions less what is filled or in the tail."""
        return max(0, self.free - len(self.filled) - len(self.tail))

    def utility_order(self) -> list[int]:
        """Positions in the pool, best-first by utility (ties in input order)."""
        return utility_order(self.pool)

    def utility_order_array(self) -> np.ndarray:
        """:meth:`utility_order` as a ``(B,)`` int64 array."""
        return utility_order_array(self.pool)

    def by_utility(self) -> ScoredBatch:
        """The pool best-first by utility (ties in input order)."""
        return self.pool.take(self.utility_order())


def utility_order(scored: Sequence[ScoredCandidate]) -> list[int]:
    """Positions of ``scored`` best-first by utility, ties in input order."""
    return utility_order_array(scored).tolist()


def utility_order_array(scored: Sequence[ScoredCandidate]) -> np.ndarray:
    """:func:`utility_order` as a ``(B,)`` int64 array."""
    batch = ScoredBatch.of(scored)
    if batch.utility_has_nan():  # NaN has no place in a stable sort by value: the Python order
        return np.array(sorted(range(len(batch)), key=lambda i: -batch.utility[i]), dtype=np.int64)
    return batch.utility_order_array()
