"""Composing per-task probabilities into one utility: ``sum_t weight[t] * p(t)``.

Weights come from the surface's ``ranker.task_weights`` (or an experiment arm's override), so
product trade-offs (likes versus hides) change without retraining. Every weighted task must be
one the ranker predicts; a typo'd task name is an error, not a silent zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def check_task_weights(task_weights: Mapping[str, float], tasks: Sequence[str]) -> None:
    missing = sorted(set(task_weights) - set(tasks))
    if missing:
        raise KeyError(
            f"task weights name tasks the ranker does not predict: {missing}; it predicts {list(tasks)}"
        )


def utility(task_scores: Mapping[str, np.ndarray], task_weights: Mapping[str, float]) -> np.ndarray:
    """``(B,)`` utilities from ``{task: (B,) probabilities}``."""
    check_task_weights(task_weights, list(task_scores))
    n = len(next(iter(task_scores.values()))) if task_scores else 0
    out = np.zeros(n, dtype=np.float64)
    for task, w in task_weights.items():
        out += float(w) * np.asarray(task_scores[task], dtype=np.float64)
    return out
