"""Two-tower retrieval model: a query tower and an item tower into one ``D``-dim space.

Both towers end in an L2 normalisation, so retrieval is a maximum inner product (= cosine)
search and the item vectors can go straight into a dot-product ANN index.

Shapes (``B`` queries, ``N`` items, ``L`` = ``core.features.HISTORY_LEN``, ``T`` = ``MAX_TAGS``):

Query tower inputs, stacked :func:`core.features.query_features` dicts:
    ``user`` ``(B,)`` int64 hashed user bucket; ``history`` ``(B, L)`` int64 item index + 1
    (0 pads, most recent last); ``surface`` ``(B,)`` int64 bucket; ``hour`` ``(B,)`` int64.
    The tower reads the last ``history_len`` columns of ``history`` (attention and mean pool,
    the recent interests) and, when ``long_history_len`` > 0, a mean over the last
    ``long_history_len`` (the long-term interests, as EASE reads a user's whole history); a
    wider feature than the model needs is sliced, so a model trained on a shorter history
    serves unchanged on a longer feature.
Item tower inputs, :func:`core.features.item_features`:
    ``item`` ``(N,)`` int64 index + 1 (0 = unknown); ``category`` ``(N,)`` int64 index + 1;
    ``tags`` ``(N, T)`` int64 tag index + 1 (0 pads); ``log_age_days`` ``(N,)`` float32.

Artifacts: ``model.pt`` (a ``state_dict``, loaded with ``weights_only=True``) and
``config.json`` (everything :meth:`TwoTowerModel.from_config` needs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.device import resolve_device
from core.features import SURFACE_BUCKETS, USER_BUCKETS
from core.serving_form import ServingForm
from retrieval.serving_query_tower import ServingQueryTower

DEFAULTS = {
    "dim": 64,
    "embed_dim": 64,
    "hidden": 128,
    "dropout": 0.0,
    "n_items": 0,
    "n_categories": 0,
    "n_tags": 0,
    "user_buckets": USER_BUCKETS,
    "surface_buckets": SURFACE_BUCKETS,
    "history_len": 20,
    "long_history_len": 0,
    "temperature": 0.05,
    "user_dropout": 0.0,
    "user_id": True,
}


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
    )


class TwoTowerModel(ServingForm, nn.Module):
    """Query tower (optionally the user id, attention- and mean-pooled recent history,
    optionally a mean over a longer history, surface, hour) and item tower (id,
    category, tags, age). Call :meth:`query_tower` / :meth:`item_tower` on tensors in
    training and :meth:`encode_queries` / :meth:`encode_items` on numpy arrays in serving."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = {**DEFAULTS, **cfg}
        c = self.cfg
        e = c["embed_dim"]
        # The history pools the same item-id table the item tower uses, so an item a user
        # engaged with and the item as a candidate start from one representation.
        self.item_emb = nn.Embedding(c["n_items"] + 1, e, padding_idx=0)
        self.category_emb = nn.Embedding(c["n_categories"] + 1, e, padding_idx=0)
        self.tag_emb = nn.Embedding(c["n_tags"] + 1, e, padding_idx=0)
        # Without it the query is a function of the history and context alone, as EASE's is:
        # a per-user vector learns from that user's train examples only and does not know the
        # interactions after them (docs/evaluation.md, "Long history, no user id").
        self.user_emb = nn.Embedding(c["user_buckets"], e) if c["user_id"] else None
        self.surface_emb = nn.Embedding(c["surface_buckets"], 8)
        self.hour_emb = nn.Embedding(24, 8)
        self.position_emb = nn.Embedding(c["history_len"], e)
        self.attn_query = nn.Parameter(torch.zeros(e))
        pools = 2 + bool(c["user_id"]) + bool(c["long_history_len"])
        self.query_mlp = _mlp(pools * e + 16 + 1, c["hidden"], c["dim"], c["dropout"])
        self.item_mlp = _mlp(3 * e + 1, c["hidden"], c["dim"], c["dropout"])
        for emb in (self.item_emb, self.category_emb, self.tag_emb, self.user_emb):
            if emb is None:
                continue
            nn.init.normal_(emb.weight, std=0.05)
            if emb.padding_idx is not None:
                emb.weight.data[emb.padding_idx].zero_()

    def compile_for_serving(self) -> TwoTowerModel:
        """Encode queries through :class:`ServingQueryTower` built from the current eval
        weights (:class:`core.serving_form.ServingForm`)."""
        return super().compile_for_serving()

    def _build_serving(self) -> ServingQueryTower:
        return ServingQueryTower(self)

    @classmethod
    def from_config(cls, cfg: dict) -> TwoTowerModel:
        return cls(cfg)

    # ---- towers on tensors -------------------------------------------------------------------

    def query_tower(
        self, user: torch.Tensor, history: torch.Tensor, surface: torch.Tensor, hour: torch.Tensor
    ) -> torch.Tensor:
        """``(B,)``, ``(B, L)``, ``(B,)``, ``(B,)`` -> ``(B, D)`` unit vectors (``L`` at least
        the model's ``history_len`` and ``long_history_len``; extra leading columns are unread)."""
        need = max(self.cfg["history_len"], self.cfg["long_history_len"])
        if history.shape[1] < need:
            raise ValueError(f"history has {history.shape[1]} columns; this model reads the last {need}")
        # One embedding lookup of the widest slice both pools read; each pool takes its tail.
        wide = history[:, history.shape[1] - need :]  # (B, need)
        wide_emb = self.item_emb(wide)  # (B, need, E)
        history = wide[:, need - self.cfg["history_len"] :]
        mask = history > 0  # (B, L)
        h = wide_emb[:, need - self.cfg["history_len"] :]  # (B, L, E)
        h_pos = h + self.position_emb.weight[-history.shape[1] :][None]
        scores = (h_pos @ self.attn_query).masked_fill(~mask, float("-inf"))  # (B, L)
        # A user with no history gets zeros from both pools (softmax over all -inf is nan).
        weights = torch.nan_to_num(torch.softmax(scores, dim=1), nan=0.0)
        attn = (weights[..., None] * h).sum(1)
        n = mask.sum(1, keepdim=True)
        mean = (h * mask[..., None]).sum(1) / n.clamp(min=1)
        empty = (n == 0).float()
        pools = [attn, mean]
        if self.user_emb is not None:
            u = self.user_emb(user)
            if self.training and self.cfg["user_dropout"] > 0:
                # A user id embedding learns from that user's few examples only and soon
                # memorises them; dropping it whole for a share of rows makes the history carry
                # the query.
                keep = torch.rand(u.shape[0], 1, device=u.device) >= self.cfg["user_dropout"]
                u = u * keep
            pools.insert(0, u)
        if self.cfg["long_history_len"]:
            start = need - self.cfg["long_history_len"]
            long_mask = (wide[:, start:] > 0)[..., None]
            pools.append((wide_emb[:, start:] * long_mask).sum(1) / long_mask.sum(1).clamp(min=1))
        x = torch.cat([*pools, self.surface_emb(surface), self.hour_emb(hour), empty], dim=1)
        return F.normalize(self.query_mlp(x), dim=-1)

    def item_tower(
        self,
        item: torch.Tensor,
        category: torch.Tensor,
        tags: torch.Tensor,
        log_age_days: torch.Tensor,
    ) -> torch.Tensor:
        """``(N,)``, ``(N,)``, ``(N, T)``, ``(N,)`` -> ``(N, D)`` unit vectors."""
        tag_mask = (tags > 0).float()
        tag_mean = (self.tag_emb(tags) * tag_mask[..., None]).sum(1) / tag_mask.sum(
            1, keepdim=True
        ).clamp(min=1.0)
        x = torch.cat(
            [
                self.item_emb(item),
                self.category_emb(category),
                tag_mean,
                log_age_days.float()[:, None],
            ],
            dim=1,
        )
        return F.normalize(self.item_mlp(x), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training step inputs (query and positive-item columns) -> ``((B, D), (B, D))``.
        One ``forward`` for both towers so DistributedDataParallel syncs every gradient."""
        q = self.query_tower(batch["user"], batch["history"], batch["surface"], batch["hour"])
        i = self.item_tower(batch["item"], batch["category"], batch["tags"], batch["log_age_days"])
        return q, i

    # ---- numpy API used by serving ------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.item_emb.weight.device

    def _tensor(self, value, dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value), dtype=dtype, device=self.device)

    @torch.inference_mode()
    def encode_queries(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Stacked ``query_features`` -> ``(B, D)`` float32."""
        was_training = self.training
        if was_training:  # served models are in eval mode: toggling walks every module (≈ 1 ms a call)
            self.eval()
        tower = (None if was_training else self.serving_form()) or self.query_tower
        out = tower(
            self._tensor(batch["user"], torch.long).reshape(-1),
            self._tensor(batch["history"], torch.long).reshape(len(np.atleast_1d(batch["user"])), -1),
            self._tensor(batch["surface"], torch.long).reshape(-1),
            self._tensor(batch["hour"], torch.long).reshape(-1),
        )
        if was_training:
            self.train()
        return out.float().cpu().numpy()

    @torch.no_grad()
    def encode_items(self, feats: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
        """``item_features`` of ``N`` items -> ``(N, D)`` float32 (in chunks of ``batch_size``)."""
        was_training = self.training
        if was_training:  # served models are in eval mode: toggling walks every module (≈ 1 ms a call)
            self.eval()
        n = len(feats["item"])
        out = np.empty((n, self.cfg["dim"]), dtype=np.float32)
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            out[s:e] = (
                self.item_tower(
                    self._tensor(feats["item"][s:e], torch.long),
                    self._tensor(feats["category"][s:e], torch.long),
                    self._tensor(feats["tags"][s:e], torch.long),
                    self._tensor(feats["log_age_days"][s:e], torch.float32),
                )
                .float()
                .cpu()
                .numpy()
            )
        if was_training:
            self.train()
        return out

    # ---- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save(state, directory / "model.pt")
        (directory / "config.json").write_text(json.dumps(self.cfg, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> TwoTowerModel:
        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        model = cls.from_config(cfg)
        dev = resolve_device(device)
        state = torch.load(directory / "model.pt", map_location=dev, weights_only=True)
        model.load_state_dict(state)
        return model.to(dev).compile_for_serving()
