"""The ranker's serving path (:class:`ranking.serving_ranker.ServingRanker`) answers as
``forward`` does, guards included — no Ray."""

import copy
import functools
import pickle

import numpy as np
import pytest
import torch

from core.features import SOURCE_KINDS
from ranking.model import MultiTaskRanker

CFG = {"n_items": 40, "n_categories": 5, "embed_dim": 4, "n_experts": 3, "expert_hidden": 8, "tower_hidden": 4,
       # guards: a dropped categorical column, a dropped and a constant dense feature, two seen sources
       "cat_features": ["user_bucket", "item", "source", "surface_bucket", "hour"],
       "dense_features": ["category_affinity", "tag_affinity", "log_popularity", "log_age_hours",
                          "retrieval_score", "history_missing", "log_recent_impressions"],
       "dense_mean": [0.1, 0.2, 1.0, 3.0, 0.3, 0.5, 0.0, 0.2],
       "dense_std": [0.5, 0.4, 1.5, 2.0, 0.2, 1.0, 1e-3, 0.7],
       "source_seen": [SOURCE_KINDS.index("logged"), SOURCE_KINDS.index("two_tower")],
       "calibration": {"click": {"method": "platt", "a": 0.7, "b": -0.4}}}  # fmt: skip


def _inputs(b, rng):
    """Random ranker inputs with ids outside every table, NaN dense values and unseen sources."""
    cat = np.stack([rng.integers(-3, 70000, b), rng.integers(-2, 50, b), rng.integers(-1, 9, b),
                    rng.integers(-1, 10, b), rng.integers(0, 18, b), rng.integers(0, 26, b)], axis=1)  # fmt: skip
    dense = rng.normal(size=(b, 8)).astype(np.float32)
    dense[rng.random((b, 8)) < 0.2] = np.nan
    return cat, dense


@functools.cache
def _trained_once(tasks):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    model = MultiTaskRanker.from_config({**CFG, "tasks": list(tasks)})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    cat, dense = _inputs(300, rng)
    cat = np.clip(cat, 0, [65535, 40, 5, 7, 15, 23])
    y = torch.as_tensor((np.nan_to_num(dense[:, 0]) > 0).astype(np.float32))
    for _ in range(25):
        out = model(torch.as_tensor(cat), torch.as_tensor(dense))
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(v, y) for v in out.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _trained(tasks=("click", "like", "hide")) -> MultiTaskRanker:
    return copy.deepcopy(_trained_once(tuple(tasks)))


@pytest.mark.parametrize("table_rows", [1 << 17, 64, 0])
def test_serving_path_predicts_what_forward_predicts(table_rows):
    model = _trained()
    cat, dense = _inputs(3000, np.random.default_rng(4))
    want = model.predict(cat, dense)  # not compiled: forward
    model.compile_for_serving(table_rows)
    assert model._serving is not None
    got = model.predict(cat, dense)
    assert set(got) == set(want)
    for t in want:
        np.testing.assert_allclose(got[t], want[t], atol=1e-5, rtol=0)
    # Chunked (batch scoring) and one-row calls answer as one whole call.
    np.testing.assert_allclose(model._serving(torch.as_tensor(cat), torch.as_tensor(dense), chunk=256).numpy(),
                               model._serving(torch.as_tensor(cat), torch.as_tensor(dense)).numpy(), atol=1e-6)  # fmt: skip
    one = model.predict(cat[:1], dense[:1])
    assert abs(float(one["click"][0]) - float(want["click"][0])) < 1e-5


def test_a_loaded_model_serves_compiled_and_training_drops_the_compiled_path(tmp_path):
    model = _trained()
    cat, dense = _inputs(200, np.random.default_rng(5))
    want = model.predict(cat, dense)["click"]
    model.save(tmp_path)
    loaded = MultiTaskRanker.load(tmp_path)
    assert loaded._serving is not None
    np.testing.assert_allclose(loaded.predict(cat, dense)["click"], want, atol=1e-5, rtol=0)
    # Pickled (Ray ships models to batch-scoring tasks): the tables stay behind, the answers do not change.
    shipped = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_allclose(shipped.predict(cat, dense)["click"], want, atol=1e-5, rtol=0)
    # New weights after training: the answers follow them, not the stale tables.
    loaded.train()
    assert loaded._serving is None
    with torch.no_grad():
        for p in loaded.parameters():
            p.add_(0.1)
    loaded.eval()
    changed = loaded.predict(cat, dense)["click"]
    with torch.inference_mode():
        c = torch.where((torch.as_tensor(cat) >= 0) & (torch.as_tensor(cat) < loaded.cat_sizes), torch.as_tensor(cat), 0)
        logit = loaded(c, torch.as_tensor(dense))["click"].numpy()
    from ranking.calibration import apply_calibration

    np.testing.assert_allclose(changed, apply_calibration(logit, CFG["calibration"]["click"]), atol=1e-5, rtol=0)
