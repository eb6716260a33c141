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


def test_grouped_ndcg_scores_each_moment_on_its_own():
    from training.ranker import grouped_ndcg

    groups = np.array([1, 1, 1, 2, 2, 2, 3, 3])
    labels = np.array([0, 1, 0, 0, 0, 1, 0, 0])  # group 3 has no positive: not counted
    perfect = np.array([0.1, 0.9, 0.2, 0.3, 0.2, 0.8, 0.5, 0.4])
    assert grouped_ndcg(perfect, labels, groups) == (1.0, 2)
    worst = -perfect
    value, n = grouped_ndcg(worst, labels, groups)
    assert n == 2 and np.isclose(value, 1 / np.log2(4))  # the positive ranked third of three
    tied = np.zeros(8)  # ties go against the positive: no credit for an order not made
    assert np.isclose(grouped_ndcg(tied, labels, groups)[0], 1 / np.log2(4))


class _Rows:
    """A Ray-Dataset-like source of numpy batches (what choose_blend iterates)."""

    def __init__(self, batch):
        self.batch = batch

    def iter_batches(self, **_):
        yield self.batch


def test_the_blend_is_chosen_on_validation_rows():
    """When the model's own click logit is uninformative and the retrieval score finds the
    engaged item, validation picks a blend that uses it (the first of the best, ties going to
    the configured one); when the retrieval score points away from it, no blend."""
    from training.ranker import choose_blend

    n_groups, size = 40, 9
    rng = np.random.default_rng(1)
    cat = rng.integers(1, 5, (n_groups * size, len(CAT_FEATURES)))
    dense = rng.normal(size=(n_groups * size, len(DENSE_FEATURES))).astype(np.float32)
    click = np.zeros(n_groups * size, dtype=np.float32)
    click[::size] = 1.0
    col = DENSE_FEATURES.index("retrieval_score")
    model = _model(dense_mean=[0.0] * len(DENSE_FEATURES), dense_std=[1.0] * len(DENSE_FEATURES),
                   dense_features=["category_affinity"], retrieval_blend=0.5)  # fmt: skip
    groups = np.repeat(np.arange(n_groups), size)
    helpful = dense.copy()
    helpful[:, col] = np.where(click > 0, 3.0, 0.0) + rng.normal(0, 0.1, len(click))
    best, tried = choose_blend(model, _Rows({"cat": cat, "dense": helpful, "click": click, "group": groups}),
                               [0.0, 1.0, 4.0], 0.5)  # fmt: skip
    scores = dict(tried)
    assert [b for b, _ in tried] == [0.5, 0.0, 1.0, 4.0]
    assert best > 0 and scores[best] == max(scores.values()) > scores[0.0]
    harmful = dense.copy()
    harmful[:, col] = np.where(click > 0, -3.0, 0.0) + rng.normal(0, 0.1, len(click))
    best, _ = choose_blend(model, _Rows({"cat": cat, "dense": harmful, "click": click, "group": groups}),
                           [0.0, 1.0, 4.0], 0.5)  # fmt: skip
    assert best == 0.0
    assert model.cfg["retrieval_blend"] == 0.5  # the model is left as it was
