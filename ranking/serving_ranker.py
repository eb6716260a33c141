"""Inference-only form of a :class:`ranking.model.MultiTaskRanker`: the same logits from its
eval weights with a fraction of the work (``MultiTaskRanker.logits`` uses it once the model
is compiled for serving; training keeps ``forward``).

The first layer of every expert and every gate is linear in the concatenated input
``x = [e_0; …; e_5; z]`` (six ``(e,)`` embeddings, ``z`` the ``(8,)`` standardised dense
features), so for the stacked first layers ``W`` (``C = E·H + T·E`` output columns)::

    W·x + b = Σ_j T_j[idx_j] + W_z·z + b,    T_j = Embedding_j · W_j^T  (n_j, C)

Tables with at most ``table_rows`` rows (category, source, surface, hour and, by default, the
user buckets and items) are precomputed and summed with one ``embedding_bag`` over their
concatenation, the bias folded into the first table; a larger table keeps its embedding and
goes through the dense matmul (``[e_j; z] @ [W_j; W_z]^T``), which bounds the memory a
loaded model takes. Then one batched second expert layer (``(E, B, H) bmm (E, H, H)``), the
gates' softmax, the mixture and every task's tower as one ``bmm`` across tasks.

Guards as ``forward`` and ``logits`` apply them: ids outside a table read 0 (unknown), the
source id goes through ``source_remap``, columns the training job dropped (``cat_keep``) read
0, dense values are standardised with NaN read as the training mean, and pinned dense features
(``dense_live``) contribute nothing. They run as numpy on the host's ``(B, 6)`` ids and
``(B, 8)`` values (one lookup per column answers the row an id reads, the remap and the dropped
columns folded in): a few microseconds, where a dozen torch ops cost their dispatch. The float
operations are the model's, in the same order (the serving digest is unchanged).
Device-agnostic: the tensors live on the model's device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.features import CAT_FEATURES, DENSE_FEATURES

TABLE_ROWS = 1 << 17
"""Default bound on a precomputed table's rows: 2^17 rows × C (268 for three tasks) float32 is
≈ 140 MB; beyond it a table keeps its (rows, 16) embedding and pays a small matmul per row."""


def nan_to_zero(x: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(x, nan=0.0)`` of a float array (NaN read as 0, ±inf as the largest
    finite values), with the common all-finite case one check instead of its Python-level
    work (a fresh array from arithmetic is returned as it is then)."""
    return x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0)


class ServingRanker:
    """``(B, 6)`` int64 ids, ``(B, 8)`` float32 dense -> ``(T, B)`` logits, tasks in the
    model's order. Built once per loaded model; holds no reference to it."""

    @torch.no_grad()
    def __init__(self, model, table_rows: int = TABLE_ROWS):
        c = model.cfg
        e, n_exp, hid = c["embed_dim"], c["n_experts"], c["expert_hidden"]
        tasks = list(c["tasks"])
        self.tasks = tasks
        self.n_experts, self.hidden = n_exp, hid
        first = [f[0] for f in model.experts] + [model.gates[t] for t in tasks]
        w1 = torch.cat([lin.weight for lin in first]).float()  # (C, d_in)
        b1 = torch.cat([lin.bias for lin in first]).float()  # (C,)
        n_cat = len(CAT_FEATURES)
        sizes = [emb.num_embeddings for emb in model.embeddings]
        self.small = [j for j in range(n_cat) if sizes[j] <= table_rows]
        self.large = [j for j in range(n_cat) if sizes[j] > table_rows]
        tables = [model.embeddings[j].weight.float() @ w1[:, j * e : (j + 1) * e].T for j in self.small]
        if tables:
            tables[0] = tables[0] + b1
            self.bias = None
        else:
            self.bias = b1
        self.table = torch.cat(tables).contiguous() if tables else None  # (Σ n_j, C)
        offsets = np.cumsum([0] + [sizes[j] for j in self.small])[:-1]
        self.large_emb = [model.embeddings[j].weight.float() for j in self.large]
        side = [w1[:, j * e : (j + 1) * e] for j in self.large] + [w1[:, n_cat * e :]]
        self.w_side = torch.cat(side, 1).T.contiguous()  # (len(large)·e + 8, C)
        # The id guards as numpy work on the request's (B, 6) ids (a few microseconds, where each
        # torch op costs its dispatch): ids outside a table read 0, then one lookup per column
        # maps an id to the row it reads, the source remap and dropped columns (``cat_keep``)
        # folded in; for the folded tables the lookup answers the row in their concatenation.
        self.sizes = model.cat_sizes.cpu().numpy()
        remap = model.source_remap.cpu().numpy()
        keep = model.cat_keep.bool().cpu().numpy()
        source_col = CAT_FEATURES.index("source")

        def reads(j: int) -> np.ndarray:
            ids = np.arange(sizes[j], dtype=np.int64)
            ids = remap[ids] if j == source_col else ids
            return ids if keep[j] else np.zeros_like(ids)

        self.small_rows = np.concatenate([reads(j) + o for j, o in zip(self.small, offsets, strict=True)]
                                         if self.small else [np.zeros(0, np.int64)])  # fmt: skip
        self.small_offsets = offsets.astype(np.int64)
        self.all_small = self.small == list(range(n_cat))
        # Columns whose lookup is not the identity (the source, dropped columns): only those
        # go through it (the item column's would be a cache miss per candidate in a 10^5 array).
        self.small_mapped = [k for k, j in enumerate(self.small)
                             if not np.array_equal(reads(j), np.arange(sizes[j]))]  # fmt: skip
        self.large_rows = [torch.as_tensor(reads(j), device=w1.device) for j in self.large]
        # Dense standardisation as the model's float32 arithmetic, in numpy (the same IEEE ops).
        self.dense_mean = model.dense_mean.float().cpu().numpy()
        self.dense_std = model.dense_std.float().cpu().numpy()
        self.dense_live = model.dense_live.float().cpu().numpy()
        # Second expert layer (E, H, H), towers stacked across tasks.
        self.w2 = torch.stack([f[3].weight.T for f in model.experts]).float().contiguous()
        self.b2 = torch.stack([f[3].bias for f in model.experts]).float()[:, None, :]  # (E, 1, H)
        towers = [model.towers[t] for t in tasks]
        self.tw1 = torch.stack([tw[0].weight.T for tw in towers]).float().contiguous()  # (T, H, h)
        self.tb1 = torch.stack([tw[0].bias for tw in towers]).float()[:, None, :]  # (T, 1, h)
        self.tw2 = torch.stack([tw[2].weight.T for tw in towers]).float().contiguous()  # (T, h, 1)
        self.tb2 = torch.stack([tw[2].bias for tw in towers]).float()[:, None, :]  # (T, 1, 1)
        self.tb2_row = self.tb2[:, :, 0]  # (T, 1): added to the (T, B) logits
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}
        assert self.w_side.shape[0] == len(self.large) * e + len(DENSE_FEATURES)

    def _bag_offsets(self, b: int, k: int) -> torch.Tensor:
        """``embedding_bag`` offsets of ``b`` bags of ``k`` ids, built once per batch size (a
        request's candidate count repeats: a handful of sizes in all)."""
        got = self._offsets.get((b, k))
        if got is None:
            if len(self._offsets) >= 64:  # batch scoring's many sizes: keep the cache bounded
                self._offsets.clear()
            got = self._offsets[(b, k)] = torch.arange(0, b * k, k, device=self.device)
        return got

    @property
    def device(self) -> torch.device:
        return self.w_side.device

    def nbytes(self) -> int:
        """Memory of the precomputed tables (what compiling costs beyond the model)."""
        return 0 if self.table is None else self.table.numel() * self.table.element_size()

    @torch.inference_mode()
    def __call__(self, cat, dense, chunk: int = 2048) -> torch.Tensor:
        """``cat`` ``(B, 6)`` long, ``dense`` ``(B, 8)`` float32 (tensors on any device, or numpy
        arrays) -> ``(T, B)`` logits on :attr:`device`. Rows go ``chunk`` at a time: a chunk's
        intermediates stay in cache (batch scoring sends 10^5 rows; at that size whole-batch
        temporaries made it memory-bound)."""
        cat = cat.cpu().numpy() if isinstance(cat, torch.Tensor) else np.asarray(cat, dtype=np.int64)
        dense = dense.cpu().numpy() if isinstance(dense, torch.Tensor) else np.asarray(dense, dtype=np.float32)
        cat = np.where((cat >= 0) & (cat < self.sizes), cat, 0)
        z = nan_to_zero((dense.astype(np.float32, copy=False) - self.dense_mean) / self.dense_std)
        z *= self.dense_live
        dev = self.device
        if self.large:
            ids = [torch.as_tensor(cat[:, j], device=dev) for j in self.large]
            side = torch.cat([*(F.embedding(rows[i], w) for i, rows, w in zip(ids, self.large_rows, self.large_emb,
                                                                              strict=True)),
                              torch.as_tensor(z, device=dev)], 1)  # fmt: skip
        else:
            side = torch.as_tensor(z, device=dev)
        small = None
        if self.table is not None:
            # Every column folded (the default): the ids as they are, C-ordered (a column
            # selection gives a Fortran-ordered copy, which the flat bag ids copy once more).
            rows = (cat if self.all_small else cat[:, self.small]) + self.small_offsets
            for k in self.small_mapped:
                rows[:, k] = self.small_rows[rows[:, k]]
            small = torch.as_tensor(rows, device=dev)
        if len(cat) <= chunk:
            return self._rows(small, side)
        return torch.cat([self._rows(None if small is None else small[s : s + chunk], side[s : s + chunk])
                          for s in range(0, len(cat), chunk)], 1)  # fmt: skip

    def _rows(self, small: torch.Tensor | None, side: torch.Tensor) -> torch.Tensor:
        b = side.shape[0]
        if small is not None:
            # Flat ids and cached bag offsets: a 2-D input makes embedding_bag build both per call.
            # In place on the bag's sums: addmm's own first step copies its input to the result.
            pre = F.embedding_bag(small.reshape(-1), self.table, self._bag_offsets(b, small.shape[1]),
                                  mode="sum").addmm_(side, self.w_side)  # fmt: skip
        else:
            pre = torch.addmm(self.bias, side, self.w_side)
        n_exp, hid, n_tasks = self.n_experts, self.hidden, len(self.tasks)
        eh = n_exp * hid
        h1 = pre[:, :eh].relu_().view(b, n_exp, hid).transpose(0, 1)  # (E, B, H), a view of pre
        h2 = torch.baddbmm(self.b2, h1, self.w2).relu_()  # (E, B, H)
        # Softmax over each task's E gate logits (a tiny last dim: spelled out, it is faster), on
        # a contiguous copy of the (B, T·E) gate columns: each of the five ops below then runs
        # over plain rows instead of pre's strided ones (≈ 20 µs less at B = 500, same floats).
        g = pre[:, eh:].contiguous().view(b, n_tasks, n_exp)
        g = (g - g.amax(2, keepdim=True)).exp_()
        g = g.div_(g.sum(2, keepdim=True))  # (B, T, E)
        # The mixture Σ_e g_e·h2_e: per row a (T, E) @ (E, H) product (what
        # ``einsum("bte,ebh->tbh")`` runs, without its parsing), made contiguous as (T, B, H),
        # which the towers' bmm reads faster than the permuted view.
        mixed = torch.bmm(g, h2.transpose(0, 1)).transpose(0, 1).contiguous()  # (T, B, H)
        t1 = torch.baddbmm(self.tb1, mixed, self.tw1).relu_()  # (T, B, h)
        # The last layer (h -> 1) as bmm, then its bias: baddbmm's bias copy into the (T, B, 1)
        # result costs more than the product; the same floats (the product, then + bias).
        return torch.bmm(t1, self.tw2).squeeze(-1).add_(self.tb2_row)  # (T, B)
