"""The ``device: cuda`` code paths, on a real GPU; skipped where torch sees none (CI has none).

The platform selects the device by config (``auto|cpu|cuda``, :func:`core.device.resolve_device`);
every other test runs the models on CPU. These check, on a GPU, what CPU runs cannot: a model
loaded with ``device="cuda"`` lives there and gives the CPU answer, and a training step there
learns. Run where a GPU is: ``python -m pytest tests/gpu`` (docs/performance.md, "GPU").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.catalogue import MAX_TAGS
from core.device import resolve_device
from core.features import CAT_FEATURES, DENSE_FEATURES, HISTORY_LEN
from ranking.model import MultiTaskRanker, cat_cardinalities
from retrieval.losses import sampled_softmax_loss
from retrieval.two_tower import TwoTowerModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

N_ITEMS, N_CATEGORIES, N_TAGS = 300, 12, 40


def _two_tower() -> TwoTowerModel:
    torch.manual_seed(0)
    return TwoTowerModel({"dim": 32, "embed_dim": 32, "hidden": 64, "n_items": N_ITEMS,
                          "n_categories": N_CATEGORIES, "n_tags": N_TAGS})  # fmt: skip


def _queries(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    history = rng.integers(0, N_ITEMS + 1, (n, HISTORY_LEN))
    history[0] = 0  # a user with no history takes the empty-history path
    return {"user": rng.integers(0, 1000, n), "history": history,
            "surface": rng.integers(0, 4, n), "hour": rng.integers(0, 24, n)}  # fmt: skip


def _items(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"item": np.arange(1, N_ITEMS + 1), "category": rng.integers(1, N_CATEGORIES + 1, N_ITEMS),
            "tags": rng.integers(0, N_TAGS + 1, (N_ITEMS, MAX_TAGS)),
            "log_age_days": (rng.random(N_ITEMS) * 5).astype(np.float32)}  # fmt: skip


def test_auto_resolves_to_the_gpu() -> None:
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda").type == "cuda"


def test_two_tower_loaded_on_cuda_lives_there_and_matches_cpu(tmp_path) -> None:
    _two_tower().save(tmp_path)
    cpu, gpu = TwoTowerModel.load(tmp_path, "cpu"), TwoTowerModel.load(tmp_path, "cuda")
    assert gpu.device.type == "cuda" and all(p.is_cuda for p in gpu.parameters())
    rng = np.random.default_rng(0)
    items, queries = _items(rng), _queries(64, rng)
    np.testing.assert_allclose(gpu.encode_items(items, batch_size=128), cpu.encode_items(items), atol=2e-5)
    q_gpu, q_cpu = gpu.encode_queries(queries), cpu.encode_queries(queries)
    np.testing.assert_allclose(q_gpu, q_cpu, atol=2e-5)
    # Same retrieval answer: the exact top 10 over the catalogue agrees query by query.
    top = lambda q, v: np.argsort(-(q @ v.T), axis=1)[:, :10]  # noqa: E731
    assert (top(q_gpu, gpu.encode_items(items)) == top(q_cpu, cpu.encode_items(items))).mean() > 0.99


def test_two_tower_training_step_on_cuda_learns_the_pairs() -> None:
    """Sampled softmax with log-Q on the GPU: after training on a fixed set of 256 (query,
    item) pairs, each query's own item outranks the other 255 for nearly every query."""
    device = torch.device("cuda")
    model = _two_tower().to(device).train()
    rng = np.random.default_rng(1)
    q = {k: torch.as_tensor(v, device=device) for k, v in _queries(256, rng).items()}
    item_idx = rng.choice(N_ITEMS, 256, replace=False)
    it = {k: torch.as_tensor(v[item_idx], device=device) for k, v in _items(rng).items()}
    batch = {**q, **it}
    log_q = torch.full((256,), float(np.log(1 / 256)), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        qv, iv = model(batch)
        loss = sampled_softmax_loss(qv, iv, log_q, temperature=0.1, item_ids=batch["item"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert qv.is_cuda and losses[-1] < 0.25 * losses[0]
    model.eval()
    with torch.no_grad():
        qv, iv = model(batch)
    assert ((qv @ iv.T).argmax(1).cpu().numpy() == np.arange(256)).mean() > 0.9


def _ranker_inputs(n: int, cfg: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cat = (rng.random((n, len(CAT_FEATURES))) * np.array(cat_cardinalities(cfg))).astype(np.int64)
    return cat, rng.standard_normal((n, len(DENSE_FEATURES))).astype(np.float32)


def test_ranker_loaded_on_cuda_lives_there_and_matches_cpu(tmp_path) -> None:
    torch.manual_seed(0)
    MultiTaskRanker({"n_items": N_ITEMS, "n_categories": N_CATEGORIES}).save(tmp_path)
    cpu, gpu = MultiTaskRanker.load(tmp_path, "cpu"), MultiTaskRanker.load(tmp_path, "cuda")
    assert gpu.device.type == "cuda" and all(p.is_cuda for p in gpu.parameters())
    cat, dense = _ranker_inputs(500, gpu.cfg, np.random.default_rng(0))
    dense[:5, 0] = np.nan  # unknown feature -> training mean, on the GPU too
    cat[:5, 1] = N_ITEMS + 50  # id outside the table -> unknown row
    p_gpu, p_cpu = gpu.predict(cat, dense), cpu.predict(cat, dense)
    assert set(p_gpu) == {"click", "like", "hide"}
    for task in p_gpu:
        assert np.isfinite(p_gpu[task]).all()
        np.testing.assert_allclose(p_gpu[task], p_cpu[task], atol=1e-5)


def test_ranker_training_step_on_cuda_learns_a_planted_signal() -> None:
    """Clicks planted on one category: after training on the GPU the click head separates it."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = MultiTaskRanker({"n_items": N_ITEMS, "n_categories": N_CATEGORIES}).to(device).train()
    rng = np.random.default_rng(2)
    cat, dense = _ranker_inputs(4096, model.cfg, rng)
    clicked = (cat[:, CAT_FEATURES.index("category")] == 3).astype(np.float32)
    cat_t, dense_t = torch.as_tensor(cat, device=device), torch.as_tensor(dense, device=device)
    y = torch.as_tensor(clicked, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(100):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(cat_t, dense_t)["click"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = model.predict(cat, dense)["click"]
    assert p[clicked == 1].min() > p[clicked == 0].max()
