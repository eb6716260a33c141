"""``PopularityCounter.top`` serves from a cached order; it must answer exactly what scoring and
sorting every item at ``now`` answers, including after adds, late events, exclusions, ``now``
before some events, non-positive weights and values that underflow to 0."""

from __future__ import annotations

import numpy as np
import pytest

from core.features import PopularityCounter


def brute_top(counter: PopularityCounter, now: float, n: int, exclude=None):
    scored = ((i, counter.value(i, now)) for i in counter._value if not exclude or i not in exclude)
    return sorted(scored, key=lambda x: (-x[1], x[0]))[:n]


@pytest.mark.parametrize("seed", range(30))
def test_top_matches_scoring_every_item(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counter = PopularityCounter(float(rng.choice([0.01, 1.0, 72.0])))
    t0 = 1.7e9
    span = float(rng.choice([3600.0, 30 * 86400.0, 20 * 365 * 86400.0]))
    items = [f"i{j}" for j in range(int(rng.integers(1, 300)))]
    for step in range(int(rng.integers(1, 600))):
        item = items[int(rng.integers(len(items)))]
        weight = 1.0 if rng.random() < 0.97 else float(rng.choice([0.0, 2.5, -1.0]))
        counter.add(item, t0 + float(rng.random()) * span, weight)
        if step % 150 == 0 or rng.random() < 0.004:
            for now in (t0 + span * 1.01, t0 + span * 0.5, t0 + span * 50, t0 + span):
                for n in (0, -3, 1, 5, 20, len(items) + 5):
                    exclude = set(rng.choice(items, int(rng.integers(0, 10))).tolist())
                    for ex in (None, exclude):
                        assert counter.top(now, n, ex) == brute_top(counter, now, n, ex)


def test_top_breaks_exact_ties_by_item_id() -> None:
    counter = PopularityCounter()
    for item in ("c", "a", "b", "d"):
        counter.add(item, 1.7e9)
    counter.add("d", 1.7e9 + 10)
    assert [i for i, _ in counter.top(1.7e9 + 3600, 3)] == ["d", "a", "b"]
    assert counter.top(1.7e9 + 3600, 3) == brute_top(counter, 1.7e9 + 3600, 3)
