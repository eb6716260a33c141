"""The request path's merge is the reference merge, candidate for candidate.

``serving.merge.merge`` sorts every candidate once and gathers provenance only for items
several sources proposed (issue 13: per-request Python work). The reference below is the
previous implementation, kept verbatim: on random source answers (overlapping items, sources
of every size, pins) both give the same items, in the same order, with the same provenance.
"""

from __future__ import annotations

import random

import pytest

from core.contracts import Candidate, MergedCandidate, SourceResult
from serving.merge import merge


def reference_merge(results, extra=()):
    prov: dict[str, list[Candidate]] = {}
    order: dict[str, tuple[int, int]] = {}
    for s_idx, res in enumerate([*results, SourceResult("extra", "", tuple(extra))]):
        for c in res.candidates:
            prov.setdefault(c.item_id, []).append(c)
            key = (c.rank, s_idx)
            if c.item_id not in order or key < order[c.item_id]:
                order[c.item_id] = key
    items = sorted(prov, key=lambda i: order[i])
    return [MergedCandidate(item_id=i, provenance=tuple(prov[i])) for i in items]


def _answer(rng: random.Random, name: str, pool: int, n: int) -> SourceResult:
    items = rng.sample([f"i{k}" for k in range(pool)], n)
    return SourceResult(name, "v1", tuple(Candidate(i, name, "v1", rng.random(), r)
                                          for r, i in enumerate(items)))  # fmt: skip


@pytest.mark.parametrize("seed", range(30))
def test_merge_matches_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.choice([5, 50, 800])
    results = [_answer(rng, f"s{k}", pool, rng.randint(0, min(pool, 300)))
               for k in range(rng.randint(0, 5))]  # fmt: skip
    pins = [Candidate(f"i{rng.randrange(pool)}", "pinned", "config", 0.0, p)
            for p in rng.sample(range(10), rng.randint(0, 3))]  # fmt: skip
    assert merge(results, pins) == reference_merge(results, pins)


def test_merge_of_nothing_is_empty() -> None:
    assert merge([]) == [] and merge([SourceResult("s", "v", ())]) == []
