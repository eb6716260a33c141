"""Multi-task ranker: multi-gate mixture of experts (MMoE, Ma et al., KDD 2018).

Inputs are :func:`core.features.ranker_features` outputs: ``cat`` ``(B, 6)`` int64 (user
bucket, item index+1, category index+1, source, surface bucket, hour) and ``dense`` ``(B, 8)``
float32. Each categorical column has its own embedding table; dense features are standardised
with the training-set mean/std stored in the config. ``E`` experts are shared; each task has a
softmax gate over the experts and a small tower producing one logit.

:meth:`MultiTaskRanker.predict` returns calibrated probabilities per task (see
:mod:`ranking.calibration`); the calibration parameters live in ``config.json``. A loaded
model (:meth:`MultiTaskRanker.load`) is compiled for serving
(:class:`ranking.serving_ranker.ServingRanker`: the same logits for a fraction of the work);
training, and any model put back in train mode, moved or given new weights, runs ``forward``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.components import ranker_tasks
from core.device import resolve_device
from core.features import (
    CAT_FEATURES,
    DENSE_FEATURES,
    SOURCE_KINDS,
    SURFACE_BUCKETS,
    USER_BUCKETS,
)
from core.serving_form import ServingForm
from ranking.calibration import sigmoid
from ranking.serving_ranker import TABLE_ROWS, ServingRanker, nan_to_zero

DEFAULTS = {
    "tasks": ranker_tasks(),
    "n_items": 0,
    "n_categories": 0,
    "embed_dim": 16,
    "n_experts": 4,
    "expert_hidden": 64,
    "tower_hidden": 32,
    "dropout": 0.0,
    "dense_mean": [0.0] * len(DENSE_FEATURES),
    "dense_std": [1.0] * len(DENSE_FEATURES),
    "calibration": {},
    "dense_features": None,
    "cat_features": None,
    "retrieval_blend": 0.0,
}


def cat_cardinalities(cfg: dict) -> list[int]:
    """Embedding-table sizes for the ``CAT_FEATURES`` columns, in order."""
    return [USER_BUCKETS, cfg["n_items"] + 1, cfg["n_categories"] + 1, len(SOURCE_KINDS), SURFACE_BUCKETS, 24]


class MultiTaskRanker(ServingForm, nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = {**DEFAULTS, **cfg}
        c = self.cfg
        e = c["embed_dim"]
        self.embeddings = nn.ModuleList(nn.Embedding(n, e) for n in cat_cardinalities(c))
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
        d_in = e * len(CAT_FEATURES) + len(DENSE_FEATURES)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d_in, c["expert_hidden"]),
                nn.ReLU(),
                nn.Dropout(c["dropout"]),
                nn.Linear(c["expert_hidden"], c["expert_hidden"]),
                nn.ReLU(),
            )
            for _ in range(c["n_experts"])
        )
        self.gates = nn.ModuleDict({t: nn.Linear(d_in, c["n_experts"]) for t in c["tasks"]})
        self.towers = nn.ModuleDict(
            {
                t: nn.Sequential(
                    nn.Linear(c["expert_hidden"], c["tower_hidden"]),
                    nn.ReLU(),
                    nn.Linear(c["tower_hidden"], 1),
                )
                for t in c["tasks"]
            }
        )
        self.register_buffer("dense_mean", torch.tensor(c["dense_mean"], dtype=torch.float32))
        self.register_buffer("dense_std", torch.tensor(c["dense_std"], dtype=torch.float32))
        # Train/serve skew guards (derived from the saved config, so older models get them):
        # a dense feature that never varied in training (std at the 1e-3 floor of
        # training.ranker) taught the model nothing, and a serving value on another scale would
        # dominate its input, so it is pinned to its training value; a source index never seen
        # in training has an untrained embedding row, so it reads as the most common seen one.
        live = self.dense_std > 1.5e-3
        # Features the training job chose not to use (``dense_features`` / ``cat_features`` in
        # the config, e.g. those the logging policy selected impressions on): pinned to their
        # training mean, or read as the unknown id 0, in training and serving alike.
        if c.get("dense_features") is not None:
            live &= torch.tensor([f in c["dense_features"] for f in DENSE_FEATURES])
        self.register_buffer("dense_live", live.float(), persistent=False)
        keep = [1.0 if c.get("cat_features") is None or f in c["cat_features"] else 0.0 for f in CAT_FEATURES]
        self.register_buffer("cat_keep", torch.tensor(keep, dtype=torch.float32), persistent=False)
        n_sources = cat_cardinalities(c)[CAT_FEATURES.index("source")]
        seen = c.get("source_seen") or [SOURCE_KINDS.index("logged")]
        remap = torch.full((n_sources,), int(seen[0]), dtype=torch.long)
        remap[torch.as_tensor([int(i) for i in seen])] = torch.as_tensor([int(i) for i in seen])
        self.register_buffer("source_remap", remap, persistent=False)
        # Constant per loaded model: computed here, not per request.
        self.register_buffer("cat_sizes", torch.tensor(cat_cardinalities(c)), persistent=False)

    def compile_for_serving(self, table_rows: int = TABLE_ROWS) -> MultiTaskRanker:
        """Serve through :class:`ServingRanker` built from the current eval weights
        (:class:`core.serving_form.ServingForm`); ``table_rows`` caps which tables are folded."""
        return super().compile_for_serving(table_rows)

    def _build_serving(self, table_rows: int) -> ServingRanker:
        return ServingRanker(self, table_rows)

    @classmethod
    def from_config(cls, cfg: dict) -> MultiTaskRanker:
        return cls(cfg)

    @property
    def tasks(self) -> list[str]:
        return list(self.cfg["tasks"])

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 6)`` int64, ``(B, 8)`` float32 -> ``{task: (B,) logits}``."""
        src = CAT_FEATURES.index("source")
        cat = torch.cat([cat[:, :src], self.source_remap[cat[:, src]][:, None], cat[:, src + 1 :]], 1)
        cat = cat * self.cat_keep.long()
        embs = [emb(cat[:, j]) for j, emb in enumerate(self.embeddings)]
        # NaN = unknown (e.g. no two-tower score for this candidate): the training mean.
        z = torch.nan_to_num((dense - self.dense_mean) / self.dense_std, nan=0.0) * self.dense_live
        x = torch.cat([*embs, z], dim=1)  # (B, d_in)
        experts = torch.stack([f(x) for f in self.experts], dim=1)  # (B, E, H)
        out = {}
        for t in self.cfg["tasks"]:
            gate = torch.softmax(self.gates[t](x), dim=1)  # (B, E)
            out[t] = self.towers[t]((gate[..., None] * experts).sum(1)).squeeze(-1)
        return out

    @property
    def device(self) -> torch.device:
        return self.dense_mean.device

    def logits(self, cat: np.ndarray, dense: np.ndarray) -> dict[str, np.ndarray]:
        """Raw (uncalibrated) ``{task: (B,) float32}`` logits."""
        return dict(zip(self.cfg["tasks"], self._logit_rows(cat, dense), strict=True))

    def _logit_rows(self, cat: np.ndarray, dense: np.ndarray) -> np.ndarray:
        """:meth:`logits` as one ``(T, B)`` float32 array, tasks in the config's order."""
        was_training = self.training
        serving = None if was_training else self.serving_form()
        if serving is not None:
            # The serving form takes the host arrays: its guards are numpy work on them. It runs
            # in inference mode itself (entering it here too cost a second enter and exit).
            raw = serving(np.asarray(cat, dtype=np.int64), np.asarray(dense, dtype=np.float32))
            raw = raw.float().cpu().numpy()
        else:
            with torch.inference_mode():
                raw = self._forward_rows(cat, dense, was_training)
        blend = float(self.cfg.get("retrieval_blend") or 0.0)
        if blend:
            # The engagement tasks' logits (click, like: a like is a click the user liked) plus
            # ``blend`` standard deviations of the retrieval score; calibration is fitted after.
            col = DENSE_FEATURES.index("retrieval_score")
            rs = (np.asarray(dense, dtype=np.float32)[:, col] - self.cfg["dense_mean"][col]) / self.cfg["dense_std"][col]
            rs = nan_to_zero(rs).astype(np.float32)
            tasks = self.cfg["tasks"]
            for t in self.cfg.get("retrieval_blend_tasks") or ("click", "like"):
                if t in tasks:
                    i = tasks.index(t)
                    raw[i] = raw[i] + blend * rs
        return raw

    def _forward_rows(self, cat: np.ndarray, dense: np.ndarray, was_training: bool) -> np.ndarray:
        """``forward``'s ``(T, B)`` logits (a model in train mode, or not compiled for serving)."""
        if was_training:  # served models are in eval mode: toggling walks every module (≈ 1 ms a call)
            self.eval()
        cat_t = torch.as_tensor(np.asarray(cat), dtype=torch.long, device=self.device)
        dense_t = torch.as_tensor(np.asarray(dense), dtype=torch.float32, device=self.device)
        # Ids outside the trained tables (new items, a changed catalogue) map to 0 = unknown.
        sizes = self.cat_sizes
        cat_t = torch.where((cat_t >= 0) & (cat_t < sizes), cat_t, torch.zeros_like(cat_t))
        out = self(cat_t, dense_t)
        raw = np.stack([out[t].float().cpu().numpy() for t in self.cfg["tasks"]])
        if was_training:
            self.train()
        return raw

    def predict(self, cat: np.ndarray, dense: np.ndarray) -> dict[str, np.ndarray]:
        """``(B, 6)``, ``(B, 8)`` -> ``{task: (B,) float32}`` calibrated probabilities."""
        cal = self.cfg.get("calibration") or {}
        tasks = self.cfg["tasks"]
        # :func:`apply_calibration` of every task's row, as one (T, B) float64 array: a Platt
        # task's row is scaled in place, then one sigmoid and one float32 cast for all tasks.
        rows = self._logit_rows(cat, dense).astype(np.float64)
        for i, t in enumerate(tasks):
            params = cal.get(t)
            if params and params.get("method", "none") != "none":
                rows[i] = params["a"] * rows[i] + params["b"]
        return dict(zip(tasks, sigmoid(rows).astype(np.float32), strict=True))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.cfg["dense_mean"] = self.dense_mean.cpu().tolist()
        self.cfg["dense_std"] = self.dense_std.cpu().tolist()
        torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, directory / "model.pt")
        (directory / "config.json").write_text(json.dumps(self.cfg, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> MultiTaskRanker:
        directory = Path(directory)
        model = cls.from_config(json.loads((directory / "config.json").read_text()))
        dev = resolve_device(device)
        model.load_state_dict(torch.load(directory / "model.pt", map_location=dev, weights_only=True))
        return model.to(dev).compile_for_serving()
