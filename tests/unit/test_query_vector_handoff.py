"""One query-tower pass per request: the two-tower source's query vector travels with the
candidate columns to the Ranker replica, which uses it for ``retrieval_score`` when its own
two-tower is that version, and encodes the user itself otherwise — no Ray."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import numpy as np
import torch

from core.contracts import Query
from core.features import PopularityCounter, query_features
from deployments.ranker import RankerDeployment
from ranking.model import MultiTaskRanker
from ranking.scorer import RankerScorer
from retrieval.similarity import TwoTowerSimilarity
from retrieval.two_tower import TwoTowerModel
from serving.user_state import ServingUserState
from tests.unit.serving_fixtures import catalogue

CAT = catalogue([{"item_id": f"i{n}", "category": "books" if n % 2 else "news"} for n in range(8)])
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
WEIGHTS = {"click": 1.0, "like": 2.0, "hide": -4.0}
score_in_replica = RankerDeployment.func_or_class._score_sync  # what the Ranker replica runs per batch


class _CountingTower(TwoTowerModel):
    passes = 0

    def encode_queries(self, batch):
        type(self).passes += 1
        return super().encode_queries(batch)


def _replica_scorer(tower: TwoTowerModel) -> RankerScorer:
    torch.manual_seed(1)
    ranker = MultiTaskRanker.from_config({"n_items": len(CAT), "n_categories": len(CAT.categories)}).eval()
    return RankerScorer(ranker, CAT, PopularityCounter(), version="rk-1",
                        similarity=TwoTowerSimilarity(tower, CAT, "tt-1"))  # fmt: skip


def test_the_ranker_replica_answers_the_same_with_the_sources_query_vector() -> None:
    torch.manual_seed(0)
    cfg = {"dim": 8, "embed_dim": 8, "hidden": 16, "n_items": len(CAT),
           "n_categories": len(CAT.categories), "n_tags": len(CAT.tag_vocab)}  # fmt: skip
    retriever_tower = TwoTowerModel.from_config(cfg).eval()  # the TwoTowerRetriever replica's copy
    state = ServingUserState(user_id="u1", history=["i2", "i5"])
    query = Query("r1", "acme", "u1", "home", 5, NOW)
    feats = query_features(state, CAT, surface="home", now=NOW.timestamp())
    sent = retriever_tower.encode_queries({k: np.asarray(v)[None] for k, v in feats.items()})[0]
    cols = (["i3", "i1", "nope", "i0"], np.array([0.9, np.nan, 0.2, 0.1], np.float32),
            ["two_tower", "trending", "editorial", "two_tower"])  # fmt: skip

    def answer(query_vectors):
        tower = _CountingTower(cfg)
        tower.load_state_dict(copy.deepcopy(retriever_tower.state_dict()))
        scorer = _replica_scorer(tower.eval())
        _CountingTower.passes = 0
        (probs,) = score_in_replica([scorer], [query], [state], [(*cols, None, query_vectors)], [WEIGHTS])
        assert not isinstance(probs, BaseException), probs
        return probs, _CountingTower.passes

    own, passes = answer(None)
    assert passes == 1  # as before: the replica encodes the user
    given, passes = answer({"tt-1": sent})
    assert passes == 0  # the vector the source searched with: no second query-tower pass
    for t in own:
        np.testing.assert_allclose(given[t], own[t], rtol=0, atol=1e-6)
    # Another two-tower version served the query (a swap, an arm's pin): its vector means
    # something else; the replica computes its own, and answers as without it.
    other, passes = answer({"tt-2": np.ones_like(sent)})
    assert passes == 1
    for t in own:
        np.testing.assert_array_equal(other[t], own[t])
    # And the vector is what the feature reads: another vector of the same version changes it.
    moved, _ = answer({"tt-1": -sent})
    assert not np.allclose(moved["click"], own["click"])
