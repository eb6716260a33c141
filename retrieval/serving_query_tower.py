"""Inference-only form of a :class:`retrieval.two_tower.TwoTowerModel`'s query tower: the
same vectors as ``query_tower`` from its eval weights, in fewer torch ops (one request
encodes one user: op overhead, not arithmetic, is what it costs).

Folded once per loaded model: the position embeddings' attention scores
(``(h + p)·a = h·a + p·a``, ``p·a`` precomputed), and the surface and hour embeddings through
their slices of the first MLP layer (``(16, hidden)`` and ``(24, hidden)`` tables, the bias
folded into the surface one). The attention and mean pools are one batched matmul of their
weights over the history embeddings. Device-agnostic: the tensors live on the model's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ServingQueryTower:
    """``user (B,)``, ``history (B, L)``, ``surface (B,)``, ``hour (B,)`` long tensors ->
    ``(B, D)`` unit vectors. Built once per loaded model; holds no reference to it."""

    @torch.no_grad()
    def __init__(self, model):
        c = model.cfg
        e = c["embed_dim"]
        self.history_len, self.long_len = c["history_len"], c["long_history_len"]
        self.need = max(self.history_len, self.long_len)
        self.item_emb = model.item_emb.weight
        self.user_emb = None if model.user_emb is None else model.user_emb.weight
        self.attn_query = model.attn_query.detach().clone()
        self.pos_score = model.position_emb.weight @ model.attn_query  # (L,)
        first, second = model.query_mlp[0], model.query_mlp[3]
        w1 = first.weight  # (hidden, d_in): [user?, attn, mean, long?, surface 8, hour 8, empty 1]
        pools = 2 + (self.user_emb is not None) + bool(self.long_len)
        p = pools * e
        self.w_pools = w1[:, :p].T.contiguous()  # (pools·E, hidden)
        self.surface_t = model.surface_emb.weight @ w1[:, p : p + 8].T + first.bias  # (S, hidden)
        self.hour_t = model.hour_emb.weight @ w1[:, p + 8 : p + 16].T  # (24, hidden)
        self.w_empty = w1[:, p + 16].clone()  # (hidden,)
        self.w2, self.b2 = second.weight.detach().clone(), second.bias.detach().clone()

    @torch.inference_mode()
    def __call__(self, user: torch.Tensor, history: torch.Tensor, surface: torch.Tensor,
                 hour: torch.Tensor) -> torch.Tensor:  # fmt: skip
        if history.shape[1] < self.need:
            raise ValueError(f"history has {history.shape[1]} columns; this model reads the last {self.need}")
        b, L = history.shape[0], self.history_len
        wide = history[:, history.shape[1] - self.need :]
        wide_emb = F.embedding(wide, self.item_emb)  # (B, need, E)
        mask = wide[:, self.need - L :] > 0  # (B, L)
        h = wide_emb[:, self.need - L :]
        scores = h @ self.attn_query + self.pos_score  # (B, L)
        # A user with no history gets zeros from both pools (softmax over all -inf is nan).
        attn_w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1).nan_to_num_(nan=0.0)
        n = mask.sum(1, keepdim=True)
        weights = torch.stack([attn_w, mask / n.clamp(min=1)], 1)  # (B, 2, L): attention, mean
        pooled = [torch.bmm(weights, h).reshape(b, -1)]  # (B, 2E)
        if self.user_emb is not None:
            pooled.insert(0, F.embedding(user, self.user_emb))
        if self.long_len:
            long_mask = (wide[:, self.need - self.long_len :] > 0)[..., None]
            long_h = wide_emb[:, self.need - self.long_len :]
            pooled.append((long_h * long_mask).sum(1) / long_mask.sum(1).clamp(min=1))
        x = torch.cat(pooled, 1) if len(pooled) > 1 else pooled[0]
        ctx = self.surface_t[surface] + self.hour_t[hour] + (n == 0).float() * self.w_empty
        return F.normalize(F.linear(F.gelu(torch.addmm(ctx, x, self.w_pools)), self.w2, self.b2), dim=-1)
