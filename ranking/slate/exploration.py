"""Exploration slots: items sampled from just below the slate, with logged propensities."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from core.config import ExplorationConfig
from core.contracts import ScoredCandidate


def request_rng(request_id: str) -> np.random.Generator:
    """The same request id always draws the same sample (replayable decisions)."""
    seed = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return np.random.default_rng(seed)


class ExplorationSlots:
    """Samples ``slots`` items uniformly without replacement from utility ranks
    ``k .. k + pool`` (items the slate would not otherwise show). The propensity logged for
    each is the probability that draw had of choosing it, ``1 / items left in the pool``, which
    is what off-policy estimators divide by."""

    def __init__(self, slots: int, pool: int):
        self.slots = slots
        self.pool = pool

    @classmethod
    def from_config(cls, cfg: ExplorationConfig) -> ExplorationSlots:
        return cls(cfg.slots, cfg.pool)

    def pool_for(
        self, ranked: Sequence[ScoredCandidate], k: int, taken: set[str]
    ) -> list[ScoredCandidate]:
        return [c for c in ranked[k : k + self.pool] if c.item_id not in taken]

    def sample(
        self, request_id: str, pool: Sequence[ScoredCandidate], slots: int | None = None
    ) -> list[tuple[ScoredCandidate, float]]:
        """``slots`` (default: the configured number) items with their propensities."""
        rng = request_rng(request_id)
        left = list(pool)
        out = []
        for _ in range(min(self.slots if slots is None else slots, len(left))):
            j = int(rng.integers(len(left)))
            out.append((left[j], 1.0 / len(left)))
            left.pop(j)
        return out
