"""Point-in-time replay of hand-built event logs (the pure functions behind the Ray Data
builders): features must exclude same-time and later events."""

import numpy as np
import pyarrow as pa
import pytest

from core.catalogue import Catalogue
from core.features import DENSE_FEATURES, HISTORY_LEN
from training.datasets import (
    assign_time_split,
    item_popularity,
    replay_user,
    time_split_bounds,
)

T0 = 1_700_000_000.0


def _catalogue() -> Catalogue:
    n = 4
    return Catalogue.from_table(
        pa.table(
            {
                "tenant_id": ["t"] * n,
                "item_id": ["a", "b", "c", "d"],
                "title": ["A", "B", "C", "D"],
                "category": ["x", "x", "y", "y"],
                "tags": [["p"], ["p", "q"], ["q"], []],
                "created_at": pa.array([int((T0 - 86400) * 1e6)] * n, pa.timestamp("us", tz="UTC")),
                "available_from": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                "available_until": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                "maturity": ["general"] * n,
            }
        ),
        "t",
    )


def _group(rows):
    cols = ["user_id", "item_id", "event_type", "ts", "surface", "request_id", "popularity"]
    out = {c: np.array([r.get(c) for r in rows], dtype=object) for c in cols}
    out["ts"] = out["ts"].astype(np.float64)
    out["popularity"] = np.array([r.get("popularity", 0.0) for r in rows], dtype=np.float64)
    return out


def ev(item, etype, ts, req=None, **kw):
    return {"user_id": "u1", "item_id": item, "event_type": etype, "ts": T0 + ts, "surface": "home", "request_id": req, **kw}


def test_two_tower_examples_exclude_same_time_and_later_events():
    cat = _catalogue()
    rows = [
        ev("a", "click", 10),
        ev("a", "dwell", 11),  # same interaction as the click: not a new example
        ev("b", "click", 20),
        ev("c", "like", 20),  # same timestamp as b: must not see b, and b must not see c
        ev("d", "click", 30),
    ]
    out = replay_user(_group(rows[::-1]), cat, ranker=False)  # input order must not matter
    assert list(out["item_id"]) == ["a", "b", "c", "d"]
    hist = out["history"]
    assert hist.shape == (4, HISTORY_LEN)
    a, b, c, d = (int(i) + 1 for i in cat.index_of(["a", "b", "c", "d"]))
    assert hist[0].sum() == 0  # nothing before the first interaction
    assert list(hist[1][hist[1] > 0]) == [a]
    assert list(hist[2][hist[2] > 0]) == [a]  # not b (same ts)
    # b and c both happened at ts 20; their order is by event type, so compare as a set.
    assert set(hist[3][hist[3] > 0]) == {a, b, c} and hist[3][-3] == a
    assert list(out["split"]) == ["train", "train", "validation", "test"]
    assert list(out["item"]) == [a, b, c, d]


def test_interleaved_positives_of_a_slate_are_one_interaction_per_item():
    # Two clicks from one slate, then each item's dwell/like: two interactions, not four;
    # a later re-click of "a" is not a new interaction either (its test item would be a
    # train item, which the protocol excludes).
    rows = [
        ev("a", "click", 10, "r1"),
        ev("b", "click", 11, "r1"),
        ev("a", "dwell", 30, "r1"),
        ev("a", "like", 31, "r1"),
        ev("b", "dwell", 40, "r1"),
        ev("c", "click", 50, "r2"),
        ev("a", "click", 60, "r3"),
    ]
    out = replay_user(_group(rows), _catalogue(), ranker=False)
    assert list(out["item_id"]) == ["a", "b", "c"]
    assert list(out["ts"] - T0) == [10, 11, 50]


def test_user_with_fewer_than_three_interactions_is_train_only():
    out = replay_user(_group([ev("a", "click", 1), ev("b", "click", 2)]), _catalogue(), ranker=False)
    assert list(out["split"]) == ["train", "train"]


def test_ranker_examples_labels_and_point_in_time_features():
    cat = _catalogue()
    rows = [
        ev("a", "impression", 10, "r1", popularity=0.0),
        ev("b", "impression", 10, "r1", popularity=0.0),
        ev("a", "click", 15, "r1"),
        ev("a", "like", 16, "r1"),
        ev("b", "hide", 17, "r1"),
        ev("b", "impression", 100, "r2", popularity=0.5),
        ev("b", "click", 100, "r2"),  # same ts as its impression: label yes, feature no
    ]
    out = replay_user(_group(rows), cat, ranker=True)
    assert list(out["item_id"]) == ["a", "b", "b"]
    np.testing.assert_array_equal(out["click"], [1, 0, 1])
    np.testing.assert_array_equal(out["like"], [1, 0, 0])
    np.testing.assert_array_equal(out["hide"], [0, 1, 0])
    dense = out["dense"]
    assert dense.shape == (3, len(DENSE_FEATURES))
    col = DENSE_FEATURES.index
    # First request: a brand-new user.
    assert dense[0, col("history_missing")] == 1.0
    # Second request at ts 100: one positive (a) before it; b's click at ts 100 is excluded.
    assert dense[2, col("history_missing")] == 0.0
    assert dense[2, col("log_user_positives")] == pytest.approx(np.log1p(1))
    assert dense[2, col("category_affinity")] == pytest.approx(1.0)  # a and b share category x
    assert dense[2, col("log_popularity")] == pytest.approx(np.log1p(0.5))
    # b was shown once before in the 24 h window (at ts 10), not counting the current one.
    assert dense[2, col("log_recent_impressions")] == pytest.approx(np.log1p(1))
    assert list(out["cat"][:, 3]) == [1, 1, 1]  # source "logged"


def test_item_popularity_counts_only_earlier_positives():
    g = {
        "item_id": np.array(["a"] * 4, dtype=object),
        "event_type": np.array(["click", "impression", "click", "impression"], dtype=object),
        "ts": np.array([T0, T0, T0 + 5, T0 + 3600 * 72], dtype=np.float64),
    }
    out = item_popularity(g)
    by_type = dict(zip(zip(out["event_type"], out["ts"], strict=True), out["popularity"], strict=True))
    assert by_type[("impression", T0)] == 0.0  # same-time click excluded
    # Two clicks ~72 h before: each decayed by one half-life (to within 5 s).
    assert by_type[("impression", T0 + 3600 * 72)] == pytest.approx(1.0, rel=1e-3)


def test_time_split_holds_out_the_latest_impressions():
    ts = np.arange(100, dtype=np.float64)
    val, hold = time_split_bounds(ts, holdout=0.1, validation=0.1)
    out = assign_time_split({"ts": ts}, val, hold)
    assert (out["split"] == "holdout").sum() == 10
    assert (out["split"] == "validation").sum() == 10
    assert out["split"][-1] == "holdout" and out["split"][0] == "train"


def _similarity(cat):
    import torch

    from retrieval.similarity import TwoTowerSimilarity
    from retrieval.two_tower import TwoTowerModel

    torch.manual_seed(0)
    model = TwoTowerModel({"dim": 8, "embed_dim": 8, "hidden": 16, "n_items": len(cat),
                           "n_categories": len(cat.categories), "n_tags": 4})  # fmt: skip
    return TwoTowerSimilarity(model.eval(), cat, "tt-test")


def test_popularity_timeline_matches_the_counter_at_any_time():
    from core.features import PopularityCounter, PopularityTimeline

    rng = np.random.default_rng(0)
    items = rng.integers(0, 6, 300)
    ts = np.sort(rng.uniform(0, 5e5, 300))
    ts[20] = ts[21]  # a tie: neither counts at that exact time
    timeline = PopularityTimeline(items, ts)
    for now in (0.0, ts[21], 2.5e5, 6e5):
        counter = PopularityCounter()
        for i, t in zip(items, ts, strict=True):
            if t < now:
                counter.add(str(i), t)
        want = counter.values([str(i) for i in range(8)], now)
        np.testing.assert_allclose(timeline.values(np.arange(8), now), want, rtol=1e-9, atol=1e-12)
    assert timeline.values(np.array([-1]), 1e6)[0] == 0.0  # unknown item


def test_engagement_rows_pair_each_new_engagement_with_retrieved_unengaged_candidates():
    from core.features import PopularityTimeline
    from training.datasets import CandidateSampler

    cat = _catalogue()
    timeline = PopularityTimeline(np.array([0, 1, 1]), np.array([T0 - 50, T0 - 40, T0 + 5]))
    sampler = CandidateSampler(_similarity(cat), timeline, negatives=2, top_k=10)
    rows = [
        ev("a", "click", 10),
        ev("a", "dwell", 12),  # the same interaction: no second engagement
        ev("a", "like", 13),
        ev("b", "rating", 20),  # an interaction-only log: no impressions, no request ids
    ]
    out = replay_user(_group(rows), cat, ranker=True, sampler=sampler)
    assert set(out["kind"]) == {"engagement"}
    first, second = out["ts"] == T0 + 10, out["ts"] == T0 + 20
    assert list(out["item_id"][first])[0] == "a" and list(out["item_id"][second])[0] == "b"
    np.testing.assert_array_equal(out["click"][first], [1, 0, 0])
    np.testing.assert_array_equal(out["like"][first], [1, 0, 0])  # a was liked; b was not
    np.testing.assert_array_equal(out["like"][second], [0, 0, 0])
    # Negatives never include the engaged item or anything engaged before.
    assert "a" not in set(out["item_id"][second])
    assert len(set(out["item_id"][first])) == 3
    col = DENSE_FEATURES.index
    # Point-in-time popularity: at T0+10, a has one positive 60 s before, b one 50 s before
    # (b's positive at T0+5 too); the retrieval score is the two-tower's q·v, never the default 0.
    pops = dict(zip(out["item_id"][first], out["dense"][first][:, col("log_popularity")], strict=True))
    assert pops["a"] == pytest.approx(np.log1p(1.0), rel=1e-3)
    if "b" in pops:
        assert pops["b"] == pytest.approx(np.log1p(2.0), rel=1e-3)
    assert np.all(out["dense"][:, col("retrieval_score")] != 0.0)
    assert list(out["cat"][:, 3]) == [2] * len(out["item_id"])  # source "two_tower"
    # Deterministic: the same log gives the same examples.
    again = replay_user(_group(rows), cat, ranker=True, sampler=sampler)
    assert list(again["item_id"]) == list(out["item_id"])


def test_impressions_with_a_sampler_carry_the_two_towers_score():
    from core.features import PopularityTimeline
    from training.datasets import CandidateSampler

    cat = _catalogue()
    sampler = CandidateSampler(_similarity(cat), PopularityTimeline(np.zeros(0), np.zeros(0)), negatives=0)
    rows = [ev("a", "impression", 10, "r1"), ev("b", "impression", 10, "r1"), ev("a", "click", 15, "r1")]
    out = replay_user(_group(rows), cat, ranker=True, sampler=sampler)
    assert list(out["kind"]) == ["impression", "impression"]
    want = sampler.similarity.scores(__import__("core.features").features.UserState("u1"), ["a", "b"], surface="home", now=T0 + 10)
    np.testing.assert_allclose(out["dense"][:, DENSE_FEATURES.index("retrieval_score")], want, rtol=1e-6)


def test_an_engagement_is_snapshot_at_the_request_that_showed_it():
    from core.features import PopularityTimeline
    from training.datasets import CandidateSampler

    cat = _catalogue()
    sampler = CandidateSampler(_similarity(cat), PopularityTimeline(np.zeros(0), np.zeros(0)), negatives=1, top_k=10)
    rows = [ev("a", "impression", 10, "r1"), ev("b", "impression", 10, "r1"), ev("a", "click", 15, "r1")]
    out = replay_user(_group(rows), cat, ranker=True, sampler=sampler)
    eng = out["kind"] == "engagement"
    assert list(out["item_id"][eng])[0] == "a" and set(out["ts"][eng]) == {T0 + 10}
    # The state before the request: a's impression in r1 is not yet a "recent impression".
    assert out["dense"][eng][0, DENSE_FEATURES.index("log_recent_impressions")] == 0.0


def test_the_protocol_test_interaction_is_never_a_training_row():
    rows = [ev("a", "click", 10), ev("b", "click", 20), ev("c", "impression", 29, "r9"),
            ev("d", "impression", 29, "r9"), ev("c", "click", 30, "r9"), ev("d", "impression", 40, "r10")]  # fmt: skip
    out = replay_user(_group(rows), _catalogue(), ranker=True)
    # c is the user's third (last) new engagement: its request r9 and everything later is held out.
    np.testing.assert_array_equal(out["heldout"], [True, True, True])
    split = assign_time_split(dict(out), val_start=0.0, hold_start=T0 + 1e9)["split"]
    assert list(split) == ["test", "test", "test"]
