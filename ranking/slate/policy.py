"""The slate stage: scored candidates → the final ordered slate, each item with its reasons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.candidates import ScoredBatch
from core.catalogue import Catalogue
from core.components import SLATE_STEPS
from core.config import SlateConfig
from core.contracts import Candidate, Placement, Query, Removal, ScoredCandidate, SlateItem
from ranking.slate.draft import SlateContext, SlateDraft


@dataclass(frozen=True)
class SlateOutcome:
    items: list[SlateItem]
    removed: list[Removal]


class SlatePolicy:
    """Runs a surface's slate steps in order (``slate.steps``; :mod:`ranking.slate.draft`).

    Invariants: at most ``query.k`` items, no repeats; every item carries reasons; an
    exploration item carries its propensity; only the given candidates can appear."""

    def __init__(self, steps: Sequence):
        self.steps = tuple(steps)

    @classmethod
    def from_config(
        cls,
        cfg: SlateConfig,
        catalogue: Catalogue | None,
        embedding_of: Callable[[str], np.ndarray | None] | None = None,
    ) -> SlatePolicy:
        ctx = SlateContext(catalogue, embedding_of)
        return cls([SLATE_STEPS.get(s.kind).cls.from_config(s, ctx) for s in cfg.steps])

    def candidates(self) -> list[Candidate]:
        """Items a step brings itself (pins), merged with the sources' candidates so that the
        eligibility rules judge them like any other."""
        return [c for s in self.steps if hasattr(s, "candidates") for c in s.candidates()]

    def __call__(self, query: Query, scored: Sequence[ScoredCandidate], user_state) -> SlateOutcome:
        draft = SlateDraft(query, user_state, ScoredBatch.of(scored))
        removed: list[Removal] = []
        for step in self.steps:
            result = step.apply(draft)
            draft.pool = ScoredBatch.of(result.kept)  # a step may answer rows: back to columns
            removed.extend(result.removed)
            for p in result.placed:
                {"fixed": draft.fixed, "fill": draft.filled, "tail": draft.tail}[p.slot].append(p)
        entries = _assemble(draft)
        items = [
            SlateItem(
                item_id=p.candidate.item_id,
                rank=r,
                score=float(p.candidate.utility),
                sources=_sources(p.candidate.provenance),
                reasons=p.reasons,
                propensity=p.propensity,
            )
            for r, p in enumerate(entries)
        ]
        return SlateOutcome(items=items, removed=removed)


def _sources(provenance: Sequence[Candidate]) -> tuple[str, ...]:
    """An item's distinct sources in the order they answered (:attr:`SlateItem.sources`):
    read from the few placed items' own provenance (a batch of them cost 5x as much)."""
    return tuple(dict.fromkeys([c.source for c in provenance]))


def _assemble(draft: SlateDraft) -> list[Placement]:
    """Filled, then tail, then each fixed item inserted at its position (ascending, so an
    earlier one does not shift a later one; past the end appends); cut to ``k``."""
    out = [*draft.filled, *draft.tail]
    for p in sorted(draft.fixed, key=lambda p: p.position):
        out.insert(min(p.position, len(out)), p)
    return out[: draft.k]
