"""The vectorised :class:`MmrDiversityStep` picks exactly what the original per-candidate Python
loop picked (kept here, frozen, as the reference), with the same reasons, on random inputs:
ties, unknown categories, source quotas, category limits, lambdas and embeddings."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from core.contracts import Candidate, ScoredCandidate
from ranking.slate.mmr import MmrDiversityStep, best_source


def reference_select(policy: MmrDiversityStep, scored, n):
    """The implementation as it was before vectorising (commit 46a0b2b)."""
    order = sorted(range(len(scored)), key=lambda i: -scored[i].utility)
    utility_rank = {scored[i].item_id: r for r, i in enumerate(order)}
    u = np.array([c.utility for c in scored], dtype=np.float64)
    span = float(u.max() - u.min()) if len(u) else 0.0
    rel = (u - u.min()) / span if span > 0 else np.ones_like(u)
    cats = {c.item_id: policy.category_of(c.item_id) for c in scored}
    max_sim = np.zeros(len(scored))
    remaining = list(order)
    per_cat: Counter = Counter()
    per_src: Counter = Counter()
    picks = []
    while remaining and len(picks) < n:
        best_i, best_val = None, -np.inf
        for i in remaining:
            c = scored[i]
            if (
                policy.max_per_category is not None
                and per_cat[cats[c.item_id]] >= policy.max_per_category
            ):
                continue
            src = best_source(c)
            if src in policy.source_quotas and per_src[src] >= policy.source_quotas[src]:
                continue
            val = policy.lam * rel[i] - (1.0 - policy.lam) * max_sim[i]
            if val > best_val + 1e-12:
                best_i, best_val = i, val
        if best_i is None:
            break
        c = scored[best_i]
        skipped_better = remaining.index(best_i) > 0
        remaining.remove(best_i)
        per_cat[cats[c.item_id]] += 1
        per_src[best_source(c)] += 1
        for j in remaining:
            max_sim[j] = max(max_sim[j], policy._similarity(scored[j].item_id, c.item_id, cats))
        reasons = (f"utility_rank:{utility_rank[c.item_id]}",)
        if skipped_better:
            reasons += ("mmr_diversity",)
        picks.append((c, reasons))
    return picks


SOURCES = ("two_tower", "trending", "fresh", "item_to_item")


def random_case(rng: np.random.Generator):
    b = int(rng.integers(0, 80))
    n_cats = int(rng.integers(1, 8))
    utilities = rng.random(b)
    if rng.random() < 0.4:  # exact ties and near-ties within the 1e-12 tolerance
        utilities = np.round(utilities, 1)
        utilities[rng.random(b) < 0.2] += rng.choice([0.0, 4e-13, 9e-13, 1.5e-12], 1)[0]
    if rng.random() < 0.1:
        utilities[:] = 0.3  # all equal: relevance is 1 everywhere
    scored, cats = [], {}
    for i in range(b):
        item = f"i{i}"
        cats[item] = None if rng.random() < 0.1 else f"c{rng.integers(n_cats)}"
        prov = tuple(
            Candidate(item, str(rng.choice(SOURCES)), "v", float(rng.random()), int(rng.integers(5)))
            for _ in range(int(rng.integers(0, 3)))
        )
        scored.append(ScoredCandidate(item, prov, {}, float(utilities[i])))
    rng.shuffle(scored)
    kwargs = dict(
        category_of=cats.get,
        max_per_category=None if rng.random() < 0.4 else int(rng.integers(0, 4)),
        source_quotas={s: int(rng.integers(0, 4)) for s in SOURCES if rng.random() < 0.3},
    )
    if rng.random() < 0.2:
        vecs = {i: rng.standard_normal(4) for i in cats if rng.random() < 0.8}
        kwargs["embedding_of"] = vecs.get
    lam = float(rng.choice([1.0, 0.0, 0.5, 0.7, rng.random()]))
    return MmrDiversityStep(lam, **kwargs), scored, int(rng.integers(0, 25))


def as_ids(picks):
    return [(c.item_id, reasons) for c, reasons in picks]


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_mmr_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        policy, scored, n = random_case(rng)
        assert as_ids(policy.select(scored, n)) == as_ids(reference_select(policy, scored, n))


def reference_scan(vals) -> int | None:
    best_i, best_val = None, -np.inf
    for i, v in enumerate(vals):
        if v > best_val + 1e-12:
            best_i, best_val = i, v
    return best_i


@pytest.mark.parametrize("seed", range(20))
def test_argbest_replays_the_tolerant_scan(seed: int) -> None:
    # Near-ties where the scan's history decides: [m - 1.5e-12, m - 0.6e-12, m] ends on m,
    # [m - 0.6e-12, m] on the first.
    rng = np.random.default_rng(seed)
    for _ in range(200):
        base = rng.random(int(rng.integers(1, 12)))
        vals = base[0] + rng.choice([0.0, -1.5e-12, -0.6e-12, 4e-13, 1.1e-12, -2.1e-12, -0.5], len(base))
        if rng.random() < 0.05:
            vals[rng.integers(len(vals))] = np.nan
        if rng.random() < 0.02:
            vals[:] = np.nan
        assert MmrDiversityStep._argbest(vals) == reference_scan(vals.tolist())


@pytest.mark.parametrize("seed", range(10))
def test_mmr_picks_the_same_when_limits_close_most_of_the_top(seed: int) -> None:
    # Many candidates in few categories with low category limits and source quotas: most of
    # the top of the utility order is closed after a few picks, and a source running out moves
    # other categories' first open candidate on (the per-category pointers of the fast path).
    rng = np.random.default_rng(1000 + seed)
    for _ in range(25):
        b, n_cats = int(rng.integers(50, 300)), int(rng.integers(1, 6))
        cats = {f"i{i}": None if rng.random() < 0.05 else f"c{rng.integers(n_cats)}" for i in range(b)}
        utilities = np.round(rng.random(b), int(rng.integers(1, 4)))
        scored = [ScoredCandidate(item, (Candidate(item, str(rng.choice(SOURCES)), "v", 0.5, 0),), {}, float(u))
                  for item, u in zip(cats, utilities, strict=True)]  # fmt: skip
        policy = MmrDiversityStep(float(rng.choice([0.8, 0.5, 0.95])), category_of=cats.get,
                                  max_per_category=int(rng.integers(1, 3)),
                                  source_quotas={s: int(rng.integers(1, 4)) for s in SOURCES if rng.random() < 0.5})  # fmt: skip
        n = int(rng.integers(5, 30))
        assert as_ids(policy.select(scored, n)) == as_ids(reference_select(policy, scored, n))
