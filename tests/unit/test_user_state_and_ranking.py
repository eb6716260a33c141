from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from core.contracts import Candidate, MergedCandidate
from core.features import (
    SOURCE_KINDS,
    PopularityCounter,
    UserState,
    ranker_features,
    source_indices,
)
from core.schema import USER_SCHEMA
from ranking.fallback import FallbackScorer
from ranking.scorer import RankerScorer
from ranking.utility import utility
from serving.user_state import OnlineUserStateStore
from tests.unit.serving_fixtures import NOW, catalogue, events, merged, query

CAT = catalogue([{"item_id": f"i{n}", "category": "books" if n % 2 else "news"} for n in range(6)])


def test_interleaved_click_dwell_like_of_a_slate_count_each_item_once() -> None:
    """Two clicks in one slate interleave their dwell/like events: the history must hold each
    item once and the affinities count two interactions, not five events."""
    s = UserState(user_id="u1")
    t = NOW.timestamp()
    for dt, kind, item in [
        (0, "click", "i1"),
        (5, "click", "i2"),
        (20, "dwell", "i1"),
        (21, "like", "i1"),
        (30, "dwell", "i2"),
        (900, "click", "i3"),
        (905, "like", "i1"),  # a late like of an item already engaged with: not a new one
    ]:
        s.apply(kind, item, t + dt, CAT)
    assert list(s.history) == ["i1", "i2", "i3"]
    assert s.n_positive == 3 and s.positives == {"i1", "i2", "i3"}
    books, news = CAT.categories.index("books"), CAT.categories.index("news")
    assert s.category_counts == {books: 2.0, news: 1.0}  # i1, i3 books; i2 news


def test_online_store_bootstraps_in_time_order_and_observes_live_events() -> None:
    h = timedelta(hours=1)
    log = events(
        [
            ("u1", "i2", "click", NOW - 2 * h),
            ("u1", "i1", "like", NOW - 3 * h),  # out of order in the table: sorted on fold
            ("u1", "i3", "impression", NOW - h),
            ("u2", "i4", "click", NOW - h),
        ]
    )
    users = pa.Table.from_pylist(
        [{"tenant_id": "acme", "user_id": "u1", "created_at": NOW, "max_maturity": "mature"}],
        schema=USER_SCHEMA,
    )
    store = OnlineUserStateStore.bootstrap(CAT, "acme", log, users)
    s = store.get("u1")
    assert list(s.history) == ["i1", "i2"] and s.positives == {"i1", "i2"}
    assert s.max_maturity == "mature" and s.n_positive == 2
    assert store.get("nobody").n_positive == 0

    store.observe(
        {"tenant_id": "acme", "user_id": "u1", "item_id": "i5", "event_type": "hide", "ts": NOW}
    )
    store.observe(
        {
            "tenant_id": "acme",
            "user_id": "u1",
            "item_id": "i3",
            "event_type": "impression",
            "ts": NOW.isoformat(),
        }
    )
    assert not store.observe(
        {"tenant_id": "globex", "user_id": "u1", "item_id": "i0", "event_type": "hide", "ts": NOW}
    )
    s2 = store.get("u1")
    assert s2.hidden == {"i5"}
    assert s2.recent_impression_counts(NOW.timestamp() + 1, 24)["i3"] == 2
    assert s.hidden == set()  # earlier snapshots do not change under later events


def test_utility_is_weighted_sum_and_rejects_unknown_tasks() -> None:
    probs = {
        "click": np.array([0.5, 0.1]),
        "like": np.array([0.2, 0.4]),
        "hide": np.array([0.1, 0.0]),
    }
    u = utility(probs, {"click": 1.0, "like": 2.0, "hide": -4.0})
    assert u == pytest.approx([0.5 + 0.4 - 0.4, 0.1 + 0.8])
    with pytest.raises(KeyError, match="share"):
        utility(probs, {"share": 1.0})


def _ranker():
    from ranking.model import MultiTaskRanker

    return MultiTaskRanker.from_config({"n_items": len(CAT), "n_categories": len(CAT.categories)})


def test_ranker_scorer_uses_shared_features_and_keeps_input_order() -> None:
    pop = PopularityCounter()
    pop.add("i1", NOW.timestamp() - 60)
    model = _ranker()
    scorer = RankerScorer(model, CAT, pop, version="rk-1")
    state = OnlineUserStateStore(CAT, "acme").get("u1")
    cands = merged("i3", "i1", "i0")
    result = asyncio.run(
        scorer.score(query(), state, cands, {"click": 1.0, "like": 2.0, "hide": -4.0})
    )
    out = result.scored
    assert result.version == "rk-1"
    assert [s.item_id for s in out] == ["i3", "i1", "i0"]
    assert set(out[0].task_scores) == {"click", "like", "hide"}
    cat, dense = scorer.features(query(), state, cands)
    ref_cat, ref_dense = ranker_features(
        state,
        ["i3", "i1", "i0"],
        CAT,
        popularity=pop.values(["i3", "i1", "i0"], NOW.timestamp()),
        now=NOW.timestamp(),
        surface="home",
        retrieval_scores=np.full(3, np.nan),  # source "s" is not the two-tower: unknown
        sources=["s"] * 3,
    )
    assert np.array_equal(cat, ref_cat) and np.allclose(dense, ref_dense, equal_nan=True)
    # One stacked forward pass gives the same probabilities as separate ones.
    a, b = scorer.features(query(), state, cands[:2]), scorer.features(query(), state, cands[2:])
    batched = scorer.score_batch([a, b])
    single = scorer.score_batch([a])[0]
    assert len(batched[0]["click"]) == 2 and len(batched[1]["click"]) == 1
    assert np.allclose(batched[0]["click"], single["click"], atol=1e-6)


def test_fallback_scorer_orders_by_normalised_retrieval_score_then_popularity() -> None:
    pop = PopularityCounter()
    pop.add("b", NOW.timestamp())
    cands = [
        MergedCandidate("a", (Candidate("a", "two_tower", "v", 0.5, 1),)),
        MergedCandidate("b", (Candidate("b", "two_tower", "v", 0.5, 2),)),
        MergedCandidate("c", (Candidate("c", "trending", "v", 40.0, 0),)),
        MergedCandidate("d", (Candidate("d", "two_tower", "v", 1.0, 0),)),
    ]
    out = FallbackScorer(pop).score(query(), cands)
    assert [s.item_id for s in out] == ["a", "b", "c", "d"]  # input order
    order = [s.item_id for s in sorted(out, key=lambda s: -s.utility)]
    assert order[2:] == ["b", "a"]  # equal retrieval score: the popular one first
    assert set(order[:2]) == {"c", "d"} and all(s.task_scores == {} for s in out)


def test_ranker_reads_only_the_two_tower_score_and_guards_against_skew() -> None:
    import torch

    from core.contracts import Candidate, MergedCandidate
    from core.features import CAT_FEATURES, DENSE_FEATURES, SOURCE_KINDS
    from ranking.model import MultiTaskRanker
    from ranking.scorer import candidate_columns

    both = MergedCandidate("i1", (Candidate("i1", "trending", "t", 14.0, 0),
                                  Candidate("i1", "two_tower", "v", 0.42, 3)))  # fmt: skip
    only_trending = MergedCandidate("i2", (Candidate("i2", "trending", "t", 9.0, 1),))
    ids, scores, sources = candidate_columns([both, only_trending])
    assert ids == ["i1", "i2"] and sources == ["trending", "trending"]
    assert scores[0] == np.float32(0.42) and np.isnan(scores[1])  # never a trending count

    # retrieval_score never varied in training (std at the 1e-3 floor); only "logged" was seen.
    std = [1.0] * len(DENSE_FEATURES)
    std[DENSE_FEATURES.index("retrieval_score")] = 1e-3
    torch.manual_seed(0)
    model = MultiTaskRanker.from_config({"n_items": 10, "n_categories": 3, "dense_std": std,
                                         "source_seen": [SOURCE_KINDS.index("logged")]})  # fmt: skip
    model.eval()
    cat = torch.zeros((4, len(CAT_FEATURES)), dtype=torch.long)
    cat[:, CAT_FEATURES.index("source")] = SOURCE_KINDS.index("logged")
    dense = torch.zeros((4, len(DENSE_FEATURES)))
    base = model(cat, dense)["click"]
    skewed = dense.clone()
    skewed[:, DENSE_FEATURES.index("retrieval_score")] = torch.tensor([0.5, 14.0, float("nan"), -3.0])
    unseen = cat.clone()
    unseen[:, CAT_FEATURES.index("source")] = SOURCE_KINDS.index("trending")
    assert torch.allclose(model(cat, skewed)["click"], base)
    assert torch.allclose(model(unseen, dense)["click"], base)
    live = dense.clone()
    live[:, DENSE_FEATURES.index("log_popularity")] = 3.0  # a feature that did vary still counts
    assert not torch.allclose(model(cat, live)["click"], base)


def test_two_tower_similarity_scores_every_candidate_like_training() -> None:
    import torch

    from core.features import query_features
    from retrieval.similarity import TwoTowerSimilarity
    from retrieval.two_tower import TwoTowerModel

    torch.manual_seed(0)
    model = TwoTowerModel.from_config({"dim": 8, "embed_dim": 8, "hidden": 16, "n_items": len(CAT),
                                       "n_categories": len(CAT.categories), "n_tags": len(CAT.tag_vocab)})  # fmt: skip
    sim = TwoTowerSimilarity(model, CAT, "tt-1")
    state = OnlineUserStateStore(CAT, "acme").get("u1")
    got = sim.scores(state, ["i3", "nope", "i0"], surface="home", now=NOW.timestamp())
    feats = query_features(state, CAT, surface="home", now=NOW.timestamp())
    q = model.encode_queries({k: np.asarray(v)[None] for k, v in feats.items()})[0]
    rows = CAT.index_of(["i3", "i0"])
    assert np.allclose(got[[0, 2]], sim.items[rows] @ q, atol=1e-6) and np.isnan(got[1])
    # The scorer uses it for every candidate, whatever source proposed it.
    scorer = RankerScorer(_ranker(), CAT, PopularityCounter(), version="rk-1", similarity=sim)
    _, dense = scorer.features(query(), state, merged("i3", "i1", "i0"))
    from core.features import DENSE_FEATURES

    col = dense[:, DENSE_FEATURES.index("retrieval_score")]
    assert np.allclose(col, sim.scores(state, ["i3", "i1", "i0"], surface="home", now=NOW.timestamp()))
    # Ray ships it into training tasks (the ranker's examples): it pickles, primed or not, and
    # scores the same on the other side.
    from ray import cloudpickle

    sim.prime([state], surface="home", now=NOW.timestamp())
    shipped = cloudpickle.loads(cloudpickle.dumps(sim))
    again = shipped.scores(state, ["i3", "nope", "i0"], surface="home", now=NOW.timestamp())
    assert np.allclose(again[[0, 2]], got[[0, 2]], atol=1e-6) and np.isnan(again[1])


def test_ranker_features_take_sources_as_names_or_as_their_indices() -> None:
    """``source_indices`` (a batch's best sources as codes into distinct names) gives the
    ``source`` column the names give, unknown names included; the rest is unchanged."""
    state = OnlineUserStateStore(CAT, "acme").get("u1")
    items = ["i3", "i1", "i0", "i2"]
    names = ["two_tower", "nope", "", "trending"]
    codes = np.array([0, 3, 1, 0])
    args = dict(popularity=np.zeros(4), now=NOW.timestamp(), surface="home")
    by_name = ranker_features(state, items, CAT, sources=[names[c] for c in codes.tolist()], **args)
    by_index = ranker_features(state, items, CAT, sources=source_indices(codes, names), **args)
    assert source_indices(codes, names).tolist() == [SOURCE_KINDS.index("two_tower"), SOURCE_KINDS.index("trending"), 0, 2]
    assert np.array_equal(by_name[0], by_index[0]) and np.array_equal(by_name[1], by_index[1])
