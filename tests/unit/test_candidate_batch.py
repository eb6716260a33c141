"""The request's columnar candidates (``core.candidates``) answer like the rows they replace.

The rule chain judges built-in rules on the whole batch as masks; a rule written against rows
(a plug-in) still sees exactly what the earlier rules left, and every removal comes from the
first rule that dropped the item. Slate-step views narrow without losing a row's values. The
query-vector memo never answers one user's vector for another input.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from core.candidates import CandidateBatch, ScoredBatch
from core.config import PolicyConfig
from core.contracts import Candidate, FilterResult, MergedCandidate, Removal, ScoredCandidate
from ranking.rules import (
    AvailabilityRule,
    BlockedRule,
    CatalogueRule,
    ExcludeRule,
    HiddenByUserRule,
    MaturityRule,
    RuleChain,
)
from ranking.rules.base import partition
from serving.user_state import ServingUserState
from tests.unit.serving_fixtures import catalogue, query

CAT = catalogue(
    [
        {
            "item_id": f"i{k}",
            "category": ["books", "news", "music"][k % 3],
            "maturity": ["general", "teen", "mature"][k % 3],
        }
        for k in range(40)
    ]  # fmt: skip
)


class EveryFifthRule:
    """A rule of the row contract (what a plug-in writes)."""

    name = "every_fifth"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def apply(self, query, candidates, user_state) -> FilterResult:
        self.seen = [c.item_id for c in candidates]
        return partition(self.name, candidates,
                         lambda c: "fifth" if int(c.item_id[1:]) % 5 == 0 else None)  # fmt: skip


def _batch(rng: random.Random) -> list[MergedCandidate]:
    items = rng.sample([f"i{k}" for k in range(50)], 30)  # i40..i49: not in the catalogue
    return [MergedCandidate(i, (Candidate(i, rng.choice(["two_tower", "trending"]), "v",
                                          rng.random(), r),)) for r, i in enumerate(items)]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_chain_of_masks_equals_rules_applied_one_after_another(seed: int) -> None:
    rng = random.Random(seed)
    cands = _batch(rng)
    state = ServingUserState(user_id="u1", max_maturity="teen")
    state.hidden.update(rng.sample([c.item_id for c in cands], 3))
    policy = PolicyConfig(blocked_items=[cands[0].item_id], blocked_categories=["music"])
    plugin = EveryFifthRule()
    rules = [CatalogueRule(CAT), AvailabilityRule(CAT), plugin, BlockedRule(policy, CAT),
             HiddenByUserRule(), MaturityRule(policy, CAT), ExcludeRule()]  # fmt: skip
    q = query(exclude_item_ids=frozenset(rng.sample([c.item_id for c in cands], 2)))

    kept: list = list(cands)
    removed: list[Removal] = []
    for rule in rules:  # the reference: each rule on what the previous ones kept, as rows
        res = rule.apply(q, list(kept), state)
        kept, removed = list(res.kept), removed + list(res.removed)
    seen_by_plugin = plugin.seen

    chained = RuleChain(rules).apply(q, CandidateBatch.of(cands), state)
    assert list(chained.kept) == kept
    assert chained.removed == removed
    assert plugin.seen == seen_by_plugin  # the plug-in saw only what the rules before it kept
    assert len({r.item_id for r in chained.removed}) == len(chained.removed)


def test_batch_is_its_rows_and_columns_follow_a_take() -> None:
    cands = _batch(random.Random(7))
    batch = CandidateBatch.of(cands)
    assert list(batch) == cands and batch == cands and batch[3] == cands[3]
    rows = batch.rows(CAT)
    keep = rows >= 0
    sub = batch.take(keep)
    assert list(sub) == [c for c, k in zip(cands, keep, strict=True) if k]
    assert (sub.rows(CAT) == rows[keep]).all()
    two_tower = [c.provenance[0].score if c.provenance[0].source == "two_tower" else np.nan
                 for c in sub]  # fmt: skip
    np.testing.assert_array_equal(sub.retrieval_scores(), np.array(two_tower, dtype=np.float32))


def test_scored_views_keep_each_rows_values() -> None:
    cands = _batch(random.Random(3))
    rows = [ScoredCandidate(c.item_id, c.provenance, {"click": k / 100, "like": k / 200}, k / 10)
            for k, c in enumerate(cands)]  # fmt: skip
    batch = ScoredBatch(CandidateBatch.of(cands), {"click": [r.task_scores["click"] for r in rows],
                        "like": [r.task_scores["like"] for r in rows]}, [r.utility for r in rows])  # fmt: skip
    assert list(batch) == rows
    drop = {rows[2].item_id, rows[5].item_id, "not-here"}
    view = batch.without(drop).take([4, 0, 1])
    expect = [r for r in rows if r.item_id not in drop]
    expect = [expect[4], expect[0], expect[1]]
    assert list(view) == expect
    assert view.item_ids == [r.item_id for r in expect]
    assert view.task_column("click") == [r.task_scores["click"] for r in expect]
    assert view.utility_array().tolist() == [r.utility for r in expect]
    assert list(ScoredBatch.of(rows).without(drop)) == [r for r in rows if r.item_id not in drop]


@pytest.mark.parametrize("seed", range(4))
def test_a_views_utility_order_is_its_own_sort(seed: int) -> None:
    """A slate step's pool (a view) reads its order from the ranker batch's one sort: the
    positions a stable sort of the view's own utilities gives (ties, of which there are many
    here, in the view's order), however the view was narrowed."""
    rng = random.Random(seed)
    cands = _batch(rng)
    utility = [rng.choice([0.1, 0.2, 0.2, 0.5, -0.3]) for _ in cands]
    batch = ScoredBatch(CandidateBatch.of(cands), {}, utility)
    ids = batch.item_ids

    def own_sort(view: ScoredBatch) -> list[int]:
        u = view.utility
        return sorted(range(len(u)), key=lambda i: -u[i])

    views = [batch, batch.without(set(rng.sample(ids, 7))), batch.take([rng.random() < 0.6 for _ in ids]),
             batch.take(rng.sample(range(len(ids)), 12)), batch.take([3])]  # fmt: skip
    views.append(views[1].without(set(rng.sample(views[1].item_ids, 5))))
    views.append(views[3].without({views[3].item_ids[0]}))
    for view in views:
        assert view.utility_order() == own_sort(view)


def test_dropping_positions_is_dropping_their_ids() -> None:
    """A slate step that knows its picks' positions narrows its pool with ``drop``: the same
    candidates, in the same order, as ``without`` their ids, on the batch and on views."""
    rng = random.Random(7)
    cands = _batch(rng)
    batch = ScoredBatch(CandidateBatch.of(cands), {"click": [rng.random() for _ in cands]},
                        [rng.random() for _ in cands])  # fmt: skip
    for pool in (batch, batch.without(set(rng.sample(batch.item_ids, 6))), batch.take([9, 2, 4, 1, 20])):
        at = rng.sample(range(len(pool)), 3)
        ids = {pool.item_ids[i] for i in at}
        assert list(pool.drop(at)) == list(pool.without(ids))
        assert pool.drop(at).task_column("click") == pool.without(ids).task_column("click")
        assert pool.drop([]) is pool


def test_query_vector_memo_answers_only_the_same_inputs() -> None:
    from core.features import UserState
    from retrieval.similarity import query_vectors

    class CountingTower:
        calls = 0

        def encode_queries(self, batch):
            CountingTower.calls += 1
            return np.asarray(batch["history"], dtype=np.float32)[:, -4:] + batch["hour"][:, None]

    tower, other = CountingTower(), CountingTower()
    a = UserState(user_id="u1")
    a.history.extend(["i1", "i2"])
    b = UserState(user_id="u1")
    b.history.extend(["i1", "i3"])
    v1 = query_vectors(tower, CAT, [a], surface="home", now=3600.0)
    assert np.array_equal(query_vectors(tower, CAT, [a], surface="home", now=3600.0), v1)  # memo: one pass
    assert CountingTower.calls == 1
    assert not np.array_equal(query_vectors(tower, CAT, [b], surface="home", now=3600.0), v1)
    assert not np.array_equal(query_vectors(tower, CAT, [a], surface="home", now=7200.0), v1)
    query_vectors(other, CAT, [a], surface="home", now=3600.0)  # another model: its own pass
    assert CountingTower.calls == 4
    # A batch (batch scoring's users) encodes only the users not remembered, in one pass, and
    # remembers each: the next single-user ask finds it.
    c = UserState(user_id="u2")
    c.history.extend(["i0"])
    both = query_vectors(tower, CAT, [a, c], surface="home", now=3600.0)
    assert CountingTower.calls == 5 and np.array_equal(both[0], v1[0])
    assert np.array_equal(query_vectors(tower, CAT, [c], surface="home", now=3600.0)[0], both[1])
    assert CountingTower.calls == 5


def _pair_batch(rng: random.Random) -> tuple[CandidateBatch, list[MergedCandidate]]:
    """A merge-like batch over :class:`Provenance` pair columns (rows with one to three
    sources, pairs in the order the sources answered), narrowed to a shuffled subset, and
    the same candidates as rows."""
    from core.provenance import Provenance

    items = [f"i{k}" for k in range(45)]
    rows = [tuple(Candidate(i, s, f"v{s}", rng.random(), rng.randrange(5))
                  for s in rng.sample(["two_tower", "trending", "fresh"], rng.randint(1, 3))) for i in items]  # fmt: skip
    by_source = sorted(((c, r) for r, p in enumerate(rows) for c in p), key=lambda cr: cr[0].source)
    pairs = Provenance(len(rows), np.array([r for _, r in by_source], dtype=np.int64),
                       [c.source for c, _ in by_source], [c.source_version for c, _ in by_source],
                       np.array([c.score for c, _ in by_source]), np.array([c.rank for c, _ in by_source]))  # fmt: skip
    keep = rng.sample(range(len(items)), 30)
    batch = CandidateBatch.from_provenance([items[r] for r in keep], pairs, np.array(keep, dtype=np.int64))
    merged = [MergedCandidate(items[r], tuple(sorted(rows[r], key=lambda c: c.source))) for r in keep]
    return batch, merged


@pytest.mark.parametrize("seed", range(4))
def test_placed_rows_read_in_one_go_are_the_rows(seed: int) -> None:
    """``rows_at`` (a slate step's placements, provenance read as arrays) gives the rows
    ``view[i]`` gives, on the batch and on views; so does the pair table's lists path."""
    rng = random.Random(seed)
    cands, merged = _pair_batch(rng)
    # Pairs in answer order (by source here), so a row's provenance is its sources in that order.
    assert list(cands) == merged
    batch = ScoredBatch(cands, {"click": [rng.random() for _ in cands]}, [rng.random() for _ in cands])
    views = [batch, batch.without(set(rng.sample(batch.item_ids, 6))), batch.take([7, 2, 11, 0])]
    for view in views:
        for at in ([], [0], rng.sample(range(len(view)), min(4, len(view))), list(range(len(view)))):
            assert view.rows_at(at) == [view[i] for i in at]
    pairs = cands._pairs
    rows = cands._pair_rows.tolist()
    few = pairs.rows_of(cands.item_ids[:3], rows[:3])
    one = pairs.rows_of(cands.item_ids[:1], rows[:1])
    assert pairs._lists is None  # neither made every pair's lists
    assert few == [m.provenance for m in merged[:3]] and one == few[:1]
    assert pairs.rows_of(cands.item_ids, rows) == [m.provenance for m in merged]  # the lists path
    assert pairs.rows_of(cands.item_ids[:3], rows[:3]) == few


def test_best_sources_of_a_narrowed_batch_and_the_nan_check() -> None:
    rng = random.Random(11)
    cands, merged = _pair_batch(rng)
    assert cands.best_sources() == [m.best.source for m in merged]
    nan = float("nan")
    for u in ([0.3, nan, -np.inf], [np.inf, 0.1, 0.1], [nan], []):
        batch = ScoredBatch(CandidateBatch([f"i{k}" for k in range(len(u))], [() for _ in u]), {}, u)
        assert batch.utility_has_nan() is any(v != v for v in u)
        if not batch.utility_has_nan():
            assert batch.utility_order_array().tolist() == sorted(range(len(u)), key=lambda i: -u[i])
        if len(u) == 3:  # a view leaving the NaN out has none
            assert batch.take([0, 2]).utility_has_nan() is False
            assert batch.take([1, 2]).utility_has_nan() is (u[1] != u[1])
