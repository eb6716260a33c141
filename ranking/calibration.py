"""Per-task probability calibration for the ranker.

Platt scaling (``p = sigmoid(a * logit + b)``) is fitted on a validation split and kept only
when it lowers the expected calibration error there; the chosen parameters live in the
ranker's ``config.json`` so serving applies exactly what was measured.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    # np.minimum(np.maximum(...)): np.clip's values (NaN kept), without its Python-level work.
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(x, -50.0), 50.0)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins: ``sum_b |B|/N * |mean(p_b) - mean(y_b)|``."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(probs) == 0:
        return 0.0
    bins = np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)
    total = np.bincount(bins, minlength=n_bins)
    p_sum = np.bincount(bins, weights=probs, minlength=n_bins)
    y_sum = np.bincount(bins, weights=labels, minlength=n_bins)
    nz = total > 0
    return float(np.sum(np.abs(p_sum[nz] - y_sum[nz])) / len(probs))


def fit_platt(logits: np.ndarray, labels: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Newton's method on the log-loss of ``sigmoid(a * logit + b)``; returns ``(a, b)``."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    # Platt's smoothed targets keep a and b finite when the split is separable.
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iters):
        p = sigmoid(a * x + b)
        g = np.array([np.sum((p - t) * x), np.sum(p - t)])
        w = p * (1 - p) + 1e-12
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(h + 1e-9 * np.eye(2), g)
        # Backtracking: saturated sigmoids make the Hessian tiny and a full step overshoot.
        scale = 1.0
        while scale > 1e-6 and loss(a - scale * step[0], b - scale * step[1]) > current:
            scale *= 0.5
        a, b = a - scale * step[0], b - scale * step[1]
        new = loss(a, b)
        if current - new < 1e-10 * max(1.0, abs(current)):
            break
        current = new
    return float(a), float(b)


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Choose Platt scaling or none for one task, by validation ECE.

    Returns ``{"method": "platt"|"none", "a", "b", "ece_before", "ece_after"}``.
    """
    raw = sigmoid(np.asarray(logits, dtype=np.float64))
    before = expected_calibration_error(raw, labels)
    if len(np.unique(labels)) < 2:
        return {"method": "none", "a": 1.0, "b": 0.0, "ece_before": before, "ece_after": before}
    a, b = fit_platt(logits, labels)
    after = expected_calibration_error(sigmoid(a * np.asarray(logits) + b), labels)
    if after < before:
        return {"method": "platt", "a": a, "b": b, "ece_before": before, "ece_after": after}
    return {"method": "none", "a": 1.0, "b": 0.0, "ece_before": before, "ece_after": before}


def apply_calibration(logits: np.ndarray, params: dict | None) -> np.ndarray:
    """``(B,)`` logits -> ``(B,)`` calibrated probabilities."""
    logits = np.asarray(logits, dtype=np.float64)
    if not params or params.get("method", "none") == "none":
        return sigmoid(logits)
    return sigmoid(params["a"] * logits + params["b"])
