"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder, the evaluation baseline.

``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and ``diag(B) = 0``; a user's scores are
``x_u B``. Only items with at least one training interaction get a row/column (the others
would have all-zero weights anyway), which keeps the ``(M, M)`` solve small.
"""

from __future__ import annotations

import numpy as np

MAX_ITEMS = 50_000


class EaseRecommender:
    """Fit on ``(user row, item index)`` interaction pairs; score users' histories."""

    def __init__(self, lam: float = 500.0):
        self.lam = float(lam)
        self.n_items = 0
        self.active: np.ndarray = np.zeros(0, dtype=np.int64)
        self.weights: np.ndarray = np.zeros((0, 0), dtype=np.float32)

    def fit(self, users: np.ndarray, items: np.ndarray, n_items: int) -> EaseRecommender:
        """``users`` ``(P,)`` and ``items`` ``(P,)`` int arrays (item index in ``[0, n_items)``)."""
        self.n_items = int(n_items)
        self.active = np.unique(items)
        if len(self.active) > MAX_ITEMS:
            raise ValueError(f"EASE is limited to {MAX_ITEMS} interacted items, got {len(self.active)}")
        col = np.searchsorted(self.active, items)
        _, row = np.unique(users, return_inverse=True)
        x = np.zeros((row.max() + 1, len(self.active)), dtype=np.float64)
        x[row, col] = 1.0  # binary: repeats count once
        g = x.T @ x
        g[np.diag_indices_from(g)] += self.lam
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)
        return self

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """Histories (item indices) of ``U`` users -> ``(U, n_items)`` float32 scores."""
        x = np.zeros((len(histories), len(self.active)), dtype=np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)
            pos = np.searchsorted(self.active, h)
            ok = (pos < len(self.active)) & (self.active[np.minimum(pos, len(self.active) - 1)] == h)
            x[r, pos[ok]] = 1.0
        out = np.zeros((len(histories), self.n_items), dtype=np.float32)
        out[:, self.active] = x @ self.weights
        return out
