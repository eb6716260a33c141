"""The ranker reads only the features its training chose, and its retrieval blend moves the
click order toward the retriever's, in training and serving alike (both read model.cfg)."""

import numpy as np
import torch

from core.features import CAT_FEATURES, DENSE_FEATURES
from ranking.model import MultiTaskRanker


def _inputs(n=32, seed=0):
    rng = np.random.default_rng(seed)
    cat = rng.integers(1, 5, (n, len(CAT_FEATURES)))
    dense = rng.normal(size=(n, len(DENSE_FEATURES))).astype(np.float32)
    return cat, dense


def _model(**cfg):
    torch.manual_seed(0)
    return MultiTaskRanker({"n_items": 10, "n_categories": 5, **cfg}).eval()


def test_unchosen_features_cannot_move_the_scores():
    model = _model(dense_features=["retrieval_score", "category_affinity"], cat_features=[])
    cat, dense = _inputs()
    base = model.logits(cat, dense)["click"]
    other = dense.copy()
    other[:, DENSE_FEATURES.index("log_popularity")] += 5.0  # not chosen: pinned
    np.testing.assert_allclose(model.logits(np.zeros_like(cat), other)["click"], base, rtol=1e-5)
    moved = dense.copy()
    moved[:, DENSE_FEATURES.index("category_affinity")] += 5.0  # chosen: read
    assert not np.allclose(model.logits(cat, moved)["click"], base)


def test_the_retrieval_blend_adds_standardised_retrieval_score_to_the_engagement_logits():
    cat, dense = _inputs()
    col = DENSE_FEATURES.index("retrieval_score")
    plain = _model(dense_mean=[0.5] * len(DENSE_FEATURES), dense_std=[2.0] * len(DENSE_FEATURES))
    blended = _model(dense_mean=[0.5] * len(DENSE_FEATURES), dense_std=[2.0] * len(DENSE_FEATURES), retrieval_blend=1.5)
    a, b = plain.logits(cat, dense), blended.logits(cat, dense)
    np.testing.assert_allclose(b["click"], a["click"] + 1.5 * (dense[:, col] - 0.5) / 2.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["like"], a["like"] + 1.5 * (dense[:, col] - 0.5) / 2.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["hide"], a["hide"], rtol=1e-6)  # not an engagement task
    # Saved and loaded, the choices hold (serving reads the same config).
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        blended.save(d)
        again = MultiTaskRanker.load(d)
    np.testing.assert_allclose(again.logits(cat, dense)["click"], b["click"], rtol=1e-5)
