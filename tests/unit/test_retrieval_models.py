"""Two-tower model, sampled-softmax loss, and EASE: pure numpy/torch, no Ray."""

import math

import numpy as np
import pytest
import torch

from core.device import resolve_device
from core.features import HISTORY_LEN
from retrieval.ease import EaseRecommender
from retrieval.losses import in_batch_history, item_log_q, sampled_softmax_loss
from retrieval.two_tower import TwoTowerModel

CFG = {"n_items": 30, "n_categories": 4, "n_tags": 6, "dim": 16, "embed_dim": 8, "hidden": 16}


def _queries(b: int, rng) -> dict:
    hist = rng.integers(0, 31, size=(b, HISTORY_LEN))
    hist[0] = 0  # a cold-start user
    return {
        "user": rng.integers(0, 1000, b),
        "history": hist,
        "surface": rng.integers(0, 16, b),
        "hour": rng.integers(0, 24, b),
    }


def _items(n: int, rng) -> dict:
    return {
        "item": np.arange(1, n + 1),
        "category": rng.integers(1, 5, n),
        "tags": rng.integers(0, 7, (n, 4)),
        "log_age_days": rng.random(n).astype(np.float32),
    }


def test_sampled_softmax_matches_hand_computed_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_q = torch.tensor([0.0, math.log(2.0)])
    # logits = q·i / 0.5 - log_q: row 0 = [2, -ln2] (label 0), row 1 = [0, 2 - ln2] (label 1)
    expected = 0.5 * (math.log(1 + 0.5 * math.exp(-2)) + math.log(1 + 2 * math.exp(-2)))
    got = sampled_softmax_loss(q, items, log_q, temperature=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_masks_accidental_hits():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # Both rows hold the same item: with masking each row's only candidate is its positive.
    loss = sampled_softmax_loss(q, items, temperature=1.0, item_ids=torch.tensor([7, 7]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    unmasked = sampled_softmax_loss(q, items, temperature=1.0)
    assert unmasked.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_sampled_softmax_masks_negatives_in_the_querys_history():
    """Row 0 already engaged with item 9 (row 1's positive): it is no negative for row 0, so row
    0's only candidate is its positive; row 1's history (pads, item 4) does not hold item 7."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([7, 9])
    history = torch.tensor([[0, 0, 9], [0, 0, 4]])
    got = sampled_softmax_loss(q, items, temperature=1.0, item_ids=ids, history=history)
    row1 = math.log(1 + math.exp(0.0 - 1.0))  # logits [0, 1], label 1
    assert got.item() == pytest.approx((0.0 + row1) / 2, rel=1e-6)
    # Padding (0) never masks: an unknown item (id 0) stays a negative.
    pads = torch.zeros((2, 3), dtype=torch.long)
    assert sampled_softmax_loss(q, items, temperature=1.0, item_ids=torch.tensor([0, 9]), history=pads).item() == pytest.approx(row1, rel=1e-6)


def test_in_batch_history_matches_brute_force():
    """The lookup through the batch's distinct items equals comparing every history entry with
    every row's item; pads (0) never match, and a repeated item marks every row holding it."""
    gen = torch.Generator().manual_seed(0)
    for b, length, n in ((1, 5, 3), (64, 20, 40), (128, 100, 1000)):
        ids = torch.randint(1, n + 1, (b,), generator=gen)
        hist = torch.randint(0, n + 1, (b, length), generator=gen)
        hist[0] = 0  # a cold-start query
        expected = ((hist[:, :, None] == ids[None, None, :]) & (hist[:, :, None] > 0)).any(1)
        assert torch.equal(in_batch_history(hist, ids), expected)
    ids = torch.tensor([5, 5, 2])
    hist = torch.tensor([[0, 5], [0, 0], [2, 0]])
    assert in_batch_history(hist, ids).tolist() == [[True, True, False], [False, False, False], [False, False, True]]


def test_long_history_pool_reads_items_beyond_the_recent_window():
    """With ``long_history_len`` the query depends on history items older than the attention
    window; without it (every model trained before it) the query reads only the last
    ``history_len`` columns, so a wider feature serves such a model unchanged."""
    rng = np.random.default_rng(3)
    q = _queries(4, rng)
    older = {**q, "history": q["history"].copy()}
    older["history"][:, :-20] = rng.integers(1, 31, (4, HISTORY_LEN - 20))
    torch.manual_seed(0)
    long_model = TwoTowerModel.from_config({**CFG, "history_len": 20, "long_history_len": HISTORY_LEN})
    assert not np.allclose(long_model.encode_queries(q)[1:], long_model.encode_queries(older)[1:])
    torch.manual_seed(0)
    recent_only = TwoTowerModel.from_config({**CFG, "history_len": 20})
    np.testing.assert_allclose(recent_only.encode_queries(q), recent_only.encode_queries(older), atol=1e-6)
    narrow = {**q, "history": q["history"][:, -20:]}
    np.testing.assert_allclose(recent_only.encode_queries(q), recent_only.encode_queries(narrow), atol=1e-6)
    with pytest.raises(ValueError, match="reads the last 100"):
        long_model.encode_queries(narrow)


def test_query_without_user_id_depends_on_history_and_context_only(tmp_path):
    """``user_id: false``: no user table, users with the same history and context get the same
    query; the model round-trips through save/load."""
    rng = np.random.default_rng(5)
    q = _queries(3, rng)
    torch.manual_seed(0)
    model = TwoTowerModel.from_config({**CFG, "user_id": False, "long_history_len": HISTORY_LEN})
    assert model.user_emb is None
    other_users = {**q, "user": q["user"] + 1}
    np.testing.assert_allclose(model.encode_queries(q), model.encode_queries(other_users), atol=1e-6)
    model.save(tmp_path)
    loaded = TwoTowerModel.load(tmp_path)
    np.testing.assert_allclose(loaded.encode_queries(q), model.encode_queries(q), atol=1e-6)


def test_long_history_pool_is_the_mean_of_the_item_embeddings():
    """Hand check of the long-term pool: its slice of the MLP input is the mean of the
    non-padding history items' id embeddings."""
    torch.manual_seed(0)
    model = TwoTowerModel.from_config({**CFG, "history_len": 2, "long_history_len": 6}).eval()
    seen = {}
    model.query_mlp.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    hist = torch.tensor([[0, 0, 3, 7, 9, 4]])
    model.query_tower(torch.zeros(1, dtype=torch.long), hist, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    e = CFG["embed_dim"]
    expected = model.item_emb.weight[[3, 7, 9, 4]].mean(0)
    torch.testing.assert_close(seen["x"][0, 3 * e : 4 * e], expected)


def test_cosine_learning_rate_schedule():
    from training.worker import learning_rate

    cfg = {"lr": 0.002, "lr_schedule": "cosine", "total_steps": 100}
    assert learning_rate(cfg, 0) == pytest.approx(0.002)
    assert learning_rate(cfg, 50) == pytest.approx(0.001)
    assert learning_rate(cfg, 100) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(cfg, 150) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    assert learning_rate({**cfg, "lr_schedule": "constant"}, 50) == 0.002


def test_item_log_q_is_log_frequency():
    lq = item_log_q(np.array([1, 1, 1, 2]), n_items=2, smoothing=0.0)
    assert np.exp(lq[1]) == pytest.approx(0.75)
    assert np.exp(lq[2]) == pytest.approx(0.25)


def test_item_log_q_strength_scales_the_correction():
    # counts [0, 3, 1] + smoothing 1 = [1, 4, 2] of 7; strength 1.25 multiplies the log.
    lq = item_log_q(np.array([1, 1, 1, 2]), n_items=2, strength=1.25)
    expected = 1.25 * np.log(np.array([1.0, 4.0, 2.0]) / 7.0)
    np.testing.assert_allclose(lq, expected.astype(np.float32), rtol=1e-6)
    # In the loss, the positive of row 1 is corrected by 1.25 * log(2/7), not log(2/7).
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = sampled_softmax_loss(q, items, torch.as_tensor(lq[[1, 2]]), temperature=0.5)
    a, b = 1.25 * math.log(4 / 7), 1.25 * math.log(2 / 7)
    # row 0 logits [2 - a, -b] (label 0), row 1 [-a, 2 - b] (label 1)
    row0 = math.log(1 + math.exp(-b - (2 - a)))
    row1 = math.log(1 + math.exp(-a - (2 - b)))
    assert got.item() == pytest.approx(0.5 * (row0 + row1), rel=1e-6)
    assert item_log_q(np.array([1, 2]), 2, strength=0.0) == pytest.approx(np.zeros(3))


def test_two_tower_outputs_unit_vectors_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    model = TwoTowerModel.from_config(CFG)
    q = model.encode_queries(_queries(5, rng))
    feats = _items(30, rng)
    it = model.encode_items(feats, batch_size=7)
    assert q.shape == (5, 16) and q.dtype == np.float32
    assert it.shape == (30, 16)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(it, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(q).all()  # the cold-start row has no history and must still encode

    model.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.pt", "config.json"}
    loaded = TwoTowerModel.load(tmp_path, device="cpu")
    np.testing.assert_allclose(loaded.encode_items(feats), it, atol=1e-6)


def test_two_tower_learns_a_simple_preference():
    # Users whose history is item 1 always engage with item 2: after training, item 2 should be
    # the top item for such a query.
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TwoTowerModel.from_config(CFG)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    items = {k: torch.as_tensor(v) for k, v in _items(30, rng).items()}
    for _ in range(150):
        b = 32
        hist = torch.zeros((b, HISTORY_LEN), dtype=torch.long)
        first = torch.randint(1, 31, (b,))
        hist[:, -1] = first
        target = (first % 30) + 1  # item k -> item k+1
        qv = model.query_tower(torch.zeros(b, dtype=torch.long), hist, torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long))
        iv = model.item_tower(*(items[k][target - 1] for k in ("item", "category", "tags", "log_age_days")))
        loss = sampled_softmax_loss(qv, iv, temperature=0.1, item_ids=target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    hist = np.zeros((1, HISTORY_LEN), dtype=np.int64)
    hist[0, -1] = 1
    qv = model.encode_queries({"user": np.zeros(1), "history": hist, "surface": np.zeros(1), "hour": np.zeros(1)})
    iv = model.encode_items({k: v.numpy() for k, v in items.items()})
    assert int(np.argmax(qv @ iv.T)) + 1 == 2


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


def test_ease_matches_closed_form_and_scores_cooccurring_items():
    users = np.array([0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 0, 1, 2, 3, 0])
    ease = EaseRecommender(lam=1.0).fit(users, items, n_items=5)
    x = np.zeros((4, 4))
    x[users, items] = 1
    p = np.linalg.inv(x.T @ x + np.eye(4))
    b = np.eye(4) - p / np.diag(p)
    np.testing.assert_allclose(ease.weights, b, atol=1e-5)
    scores = ease.score([np.array([0])])
    assert scores.shape == (1, 5)
    assert scores[0, 1] > scores[0, 2]  # 1 co-occurs with 0; 2 never does
    assert scores[0, 4] == 0.0  # never interacted: no weights
