"""The two-tower's serving query tower (:class:`retrieval.serving_query_tower.ServingQueryTower`)
encodes what ``query_tower`` encodes — no Ray."""

import pickle

import numpy as np
import pytest
import torch

from retrieval.two_tower import TwoTowerModel

CFG = {"dim": 8, "embed_dim": 8, "hidden": 16, "n_items": 50, "n_categories": 4, "n_tags": 6, "history_len": 5}


def _batch(b, rng, width=12):
    hist = rng.integers(0, 51, (b, width))
    hist[0] = 0  # no history: both pools read zeros
    hist[1, :-2] = 0  # a short one
    return {"user": rng.integers(0, 1 << 16, b), "history": hist,
            "surface": rng.integers(0, 16, b), "hour": rng.integers(0, 24, b)}  # fmt: skip


@pytest.mark.parametrize("extra", [{}, {"user_id": False}, {"long_history_len": 10}])
def test_serving_query_tower_encodes_as_the_query_tower(tmp_path, extra):
    torch.manual_seed(0)
    model = TwoTowerModel.from_config({**CFG, **extra})
    with torch.no_grad():  # a trained model's attention is not the zero init
        model.attn_query.normal_()
        model.position_emb.weight.normal_()
    batch = _batch(64, np.random.default_rng(1))
    want = model.eval().encode_queries(batch)  # not compiled: query_tower
    model.save(tmp_path)
    loaded = TwoTowerModel.load(tmp_path)
    assert loaded._serving is not None
    np.testing.assert_allclose(loaded.encode_queries(batch), want, atol=1e-6, rtol=0)
    one = {k: v[2:3] for k, v in batch.items()}
    np.testing.assert_allclose(loaded.encode_queries(one)[0], want[2], atol=1e-6, rtol=0)
    shipped = pickle.loads(pickle.dumps(loaded))  # the folded tables stay behind; answers do not change
    np.testing.assert_allclose(shipped.encode_queries(batch), want, atol=1e-6, rtol=0)
    loaded.train()  # training: back to query_tower, and new weights are read
    assert loaded._serving is None
    with torch.no_grad():
        loaded.hour_emb.weight.add_(1.0)
    loaded.eval()
    changed = loaded.encode_queries(batch)
    assert not np.allclose(changed, want)
    with torch.inference_mode():
        t = {k: torch.as_tensor(v) for k, v in batch.items()}
        ref = loaded.query_tower(t["user"], t["history"], t["surface"], t["hour"]).numpy()
    np.testing.assert_allclose(changed, ref, atol=1e-6, rtol=0)
