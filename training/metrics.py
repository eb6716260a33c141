"""Offline metrics: top-k ranking metrics for retrieval, AUC / log-loss / ECE for the ranker.

Ranking metrics take each user's top-K list of item indices ``(U, K)`` and the user's set of
relevant (held-out) items; they are averaged over users. Definitions (``rel`` = relevant set,
``rank`` 1-based):

* ``hr@k``     1 if any relevant item is in the top k, else 0
* ``recall@k`` ``|top-k ∩ rel| / |rel|``
* ``ndcg@k``   ``sum_{hits} 1/log2(rank+1)`` divided by the ideal ``sum_{r=1..min(|rel|,k)}``
* ``mrr``      ``1/rank`` of the first relevant item within the top K (0 if none): MRR@K
* ``coverage@k`` distinct items in all users' top-k lists / catalogue size
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ranking.calibration import expected_calibration_error


def ranking_metrics(
    topk: np.ndarray,
    relevant: Sequence[Sequence[int]],
    n_items: int,
    ks: Sequence[int] = (10, 20, 50),
    ndcg_ks: Sequence[int] = (10, 20),
    hr_ks: Sequence[int] = (10,),
    coverage_k: int = 10,
) -> dict[str, float]:
    """``topk`` ``(U, K)`` item indices best first; ``relevant`` one collection per user."""
    topk = np.asarray(topk)
    u, kmax = topk.shape
    if u == 0:
        return {}
    hits = np.zeros((u, kmax), dtype=bool)
    n_rel = np.zeros(u, dtype=np.float64)
    for i, rel in enumerate(relevant):
        rel = set(int(r) for r in rel)
        n_rel[i] = len(rel)
        hits[i] = [int(x) in rel for x in topk[i]]
    n_rel_safe = np.maximum(n_rel, 1.0)
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    out: dict[str, float] = {}
    for k in hr_ks:
        out[f"hr@{k}"] = float(hits[:, :k].any(axis=1).mean())
    for k in ks:
        out[f"recall@{k}"] = float((hits[:, :k].sum(axis=1) / n_rel_safe).mean())
    for k in ndcg_ks:
        dcg = (hits[:, :k] * discounts[:k]).sum(axis=1)
        ideal = np.array([discounts[: int(min(n, k))].sum() for n in n_rel])
        out[f"ndcg@{k}"] = float(np.where(ideal > 0, dcg / np.maximum(ideal, 1e-12), 0.0).mean())
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    out["mrr"] = float(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0).mean())
    out[f"coverage@{coverage_k}"] = float(len(np.unique(topk[:, :coverage_k])) / max(1, n_items))
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties get the average rank; nan if one
    class is missing."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank within each run of equal scores.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``auc``, ``log_loss``, ``ece`` and the positive rate for one task."""
    return {
        "auc": auc(probs, labels),
        "log_loss": log_loss(probs, labels),
        "ece": expected_calibration_error(probs, labels),
        "positive_rate": float(np.mean(labels)) if len(labels) else float("nan"),
    }
