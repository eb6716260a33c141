"""Exploration slots: items sampled from just below the slate, with logged propensities."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from core.candidates import ScoredBatch
from core.components import SLATE_STEPS
from core.config import SlateStepSpec
from core.contracts import FilterResult, Placement, ScoredCandidate
from ranking.slate.draft import SlateContext, SlateDraft


def request_rng(request_id: str) -> np.random.Generator:
    """The same request id always draws the same sample (replayable decisions)."""
    seed = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    # What ``np.random.default_rng(seed)`` builds, without its argument dispatch (≈ 2.5x the
    # construction): the same bit generator from the same seed, so the same draws.
    return np.random.Generator(np.random.PCG64(seed))


class ExplorationConfig(SlateStepSpec):
    slots: int = Field(1, ge=0, le=10)
    """Slate positions given to an item sampled from outside the top of the ranking."""
    pool: int = Field(50, ge=1, description="exploration samples from ranks k..k+pool")


@SLATE_STEPS.register("exploration", ExplorationConfig)
class ExplorationStep:
    """Samples ``slots`` items uniformly without replacement from utility ranks
    ``k .. k + pool`` of the pool (items the slate would not otherwise show) and places them
    in the tail, always leaving at least one free position to the ordering. The propensity
    logged for each is the probability that draw had of choosing it, ``1 / items left in the
    pool``, which is what off-policy estimators divide by."""

    name = "exploration"

    def __init__(self, slots: int, pool: int):
        self.slots = slots
        self.pool = pool

    @classmethod
    def from_config(cls, cfg: ExplorationConfig, ctx: SlateContext) -> ExplorationStep:
        return cls(cfg.slots, cfg.pool)

    def sample(
        self, request_id: str, pool: Sequence[ScoredCandidate], slots: int | None = None
    ) -> list[tuple[ScoredCandidate, float]]:
        """``slots`` (default: the configured number) items with their propensities."""
        return [(pool[j], p) for j, p in self.draw(request_id, len(pool), slots)]

    def draw(self, request_id: str, n: int, slots: int | None = None) -> list[tuple[int, float]]:
        """:meth:`sample` as positions in a pool of ``n``, each with its propensity."""
        rng = request_rng(request_id)
        left = list(range(n))
        out = []
        for _ in range(min(self.slots if slots is None else slots, len(left))):
            j = int(rng.integers(len(left)))
            out.append((left[j], 1.0 / len(left)))
            left.pop(j)
        return out

    def apply(self, draft: SlateDraft) -> FilterResult:
        n_free = draft.open
        if not self.slots or n_free <= 1:
            return FilterResult(kept=draft.pool, removed=[])
        k = draft.k
        pool = ScoredBatch.of(draft.pool)
        below = draft.utility_order_array()[k : k + self.pool].tolist()
        picks = [(below[j], p)
                 for j, p in self.draw(draft.query.request_id, len(below), min(self.slots, n_free - 1))]  # fmt: skip
        placed = [
            Placement(c, ("exploration", f"propensity:{p:.6g}"), "tail", propensity=p)
            for c, (_, p) in zip(pool.rows_at([i for i, _ in picks]), picks, strict=True)
        ]
        return FilterResult(kept=pool.drop([i for i, _ in picks]), removed=[], placed=placed)
