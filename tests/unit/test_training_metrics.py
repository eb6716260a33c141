"""Offline metrics and calibration against hand-computed values: no Ray."""

import math

import numpy as np
import pytest

from ranking.calibration import apply_calibration, expected_calibration_error, fit_calibration
from training.metrics import auc, classification_metrics, log_loss, ranking_metrics


def test_ranking_metrics_hand_computed():
    topk = np.array([[3, 1, 2, 0], [0, 1, 2, 3], [5, 6, 7, 8]])
    relevant = [[1], [2, 3], [9]]
    m = ranking_metrics(topk, relevant, n_items=10, ks=(2, 4), ndcg_ks=(2, 4), hr_ks=(2,), coverage_k=2)
    # user 0: hit at rank 2; user 1: hits at ranks 3, 4; user 2: none
    assert m["hr@2"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["recall@4"] == pytest.approx((1 + 1 + 0) / 3)
    d = lambda r: 1 / math.log2(r + 1)  # noqa: E731
    assert m["ndcg@2"] == pytest.approx((d(2) / d(1)) / 3)
    ndcg4_u1 = (d(3) + d(4)) / (d(1) + d(2))
    assert m["ndcg@4"] == pytest.approx((d(2) / d(1) + ndcg4_u1) / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert m["coverage@2"] == pytest.approx(5 / 10)  # {3, 1, 0, 5, 6}

def test_auc_and_log_loss_hand_computed():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)  # tie
    assert math.isnan(auc(np.array([0.2]), np.array([1])))
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert log_loss(np.array([0.9, 0.2]), np.array([1, 0])) == pytest.approx(expected)


def test_ece_hand_computed():
    probs = np.array([0.1, 0.1, 0.9, 0.9])
    labels = np.array([0, 1, 1, 1])
    # two bins: |0.1 - 0.5| * 2/4 + |0.9 - 1.0| * 2/4
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.25)


def test_platt_calibration_fixes_overconfident_logits_and_is_kept_only_if_better():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(size=20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    overconfident = 3.0 * true_logit + 1.0
    params = fit_calibration(overconfident, labels)
    assert params["method"] == "platt"
    assert params["a"] == pytest.approx(1 / 3, rel=0.1)
    assert params["ece_after"] < params["ece_before"]
    probs = apply_calibration(overconfident, params)
    assert classification_metrics(probs, labels)["ece"] < 0.02
    # Already calibrated: nothing to gain, or only noise; either way output is a probability.
    ok = fit_calibration(true_logit, labels)
    assert ok["ece_after"] <= ok["ece_before"]
