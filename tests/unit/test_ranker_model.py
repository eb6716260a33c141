"""Multi-task ranker: shapes, calibrated output, persistence — no Ray."""

import numpy as np
import torch

from ranking.calibration import apply_calibration, sigmoid
from ranking.model import MultiTaskRanker

CFG = {"n_items": 20, "n_categories": 3, "embed_dim": 4, "n_experts": 2, "expert_hidden": 8, "tower_hidden": 4}


def _inputs(b, rng):
    cat = np.stack([rng.integers(0, 100, b), rng.integers(0, 21, b), rng.integers(0, 4, b), rng.integers(0, 8, b), rng.integers(0, 16, b), rng.integers(0, 24, b)], axis=1)
    return cat, rng.random((b, 8)).astype(np.float32)


def test_predict_returns_calibrated_probabilities_per_task(tmp_path):
    rng = np.random.default_rng(0)
    model = MultiTaskRanker.from_config(CFG)
    cat, dense = _inputs(7, rng)
    raw = model.logits(cat, dense)
    assert model.tasks == ["click", "like", "hide"]
    model.cfg["calibration"] = {"click": {"method": "platt", "a": 0.5, "b": -1.0}}
    out = model.predict(cat, dense)
    assert set(out) == {"click", "like", "hide"}
    assert all(v.shape == (7,) and v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["click"], sigmoid(0.5 * raw["click"] - 1.0), rtol=1e-5)
    np.testing.assert_allclose(out["like"], sigmoid(raw["like"]), rtol=1e-5)

    model.save(tmp_path)
    loaded = MultiTaskRanker.load(tmp_path, device="cpu")
    assert loaded.cfg["calibration"]["click"]["method"] == "platt"
    np.testing.assert_allclose(loaded.predict(cat, dense)["click"], out["click"], rtol=1e-5)


def test_predict_is_apply_calibration_of_each_tasks_logits_exactly():
    """``predict`` calibrates all tasks as one array: the same floats as
    :func:`apply_calibration` per task, cast to float32 (Platt, none, and a ``none`` method)."""
    rng = np.random.default_rng(1)
    model = MultiTaskRanker.from_config(CFG).compile_for_serving()
    cat, dense = _inputs(33, rng)
    cal = {"click": {"method": "platt", "a": 0.7, "b": -0.4}, "hide": {"method": "none", "a": 2.0, "b": 1.0}}
    model.cfg["calibration"] = cal
    raw = model.logits(cat, dense)
    out = model.predict(cat, dense)
    assert list(out) == model.tasks
    for t in model.tasks:
        np.testing.assert_array_equal(out[t], apply_calibration(raw[t], cal.get(t)).astype(np.float32))


def test_unknown_ids_map_to_the_unknown_row():
    model = MultiTaskRanker.from_config(CFG)
    cat, dense = _inputs(2, np.random.default_rng(1))
    cat[:, 1] = [999, -5]  # items outside the trained table
    assert np.isfinite(model.predict(cat, dense)["click"]).all()


def test_ranker_learns_a_label_from_a_dense_feature():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    model = MultiTaskRanker.from_config({**CFG, "expert_hidden": 32, "tower_hidden": 16, "tasks": ["click"]})
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    cat, dense = _inputs(2000, rng)
    y = (dense[:, 0] > 0.5).astype(np.float32)
    for _ in range(200):
        out = model(torch.as_tensor(cat), torch.as_tensor(dense))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["click"], torch.as_tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = model.predict(cat, dense)["click"]
    assert p[y == 1].mean() > 0.8 and p[y == 0].mean() < 0.2
