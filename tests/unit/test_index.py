"""Top-k indexes against the exact answer (the TFRS pattern): no Ray."""

import numpy as np
import pytest

from retrieval.index import BruteForceIndex, ScannIndex, load_index


def _clustered(n, d, rng, centres=64):
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(exact, approx):
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, approx, strict=True)]))


def test_brute_force_equals_naive_argsort(monkeypatch):
    import retrieval.index as index_mod

    monkeypatch.setattr(index_mod, "CHUNK_ROWS", 37)  # force several chunks
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    ids = np.array([f"i{i}" for i in range(200)], dtype=object)
    scores, rows = BruteForceIndex(x, ids).search(q, 15)
    naive = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(rows, naive)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, naive, 1), rtol=1e-6)


def test_brute_force_save_load(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    idx = BruteForceIndex(x, np.arange(50).astype(str), item_tower_version="v1")
    idx.save(tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.item_tower_version == "v1"
    np.testing.assert_array_equal(loaded.search(x[:3], 5)[1], idx.search(x[:3], 5)[1])


@pytest.mark.parametrize("k", [10, 100])
def test_scann_recall_vs_brute_force_at_default_settings(k):
    rng = np.random.default_rng(3)
    x = _clustered(20_000, 32, rng)
    q = _clustered(300, 32, rng)
    ids = np.arange(len(x)).astype(str)
    exact = BruteForceIndex(x, ids).search(q, k)[1]
    approx = ScannIndex.build(x, ids).search(q, k)[1]
    assert _recall(exact, approx) >= 0.95


def test_scann_small_catalogue_is_exact():
    rng = np.random.default_rng(4)
    x = _clustered(300, 16, rng)
    ids = np.arange(300).astype(str)
    exact = BruteForceIndex(x, ids).search(x[:20], 10)[1]
    assert _recall(exact, ScannIndex.build(x, ids).search(x[:20], 10)[1]) == 1.0


def test_scann_save_load_gives_identical_results(tmp_path):
    rng = np.random.default_rng(5)
    x = _clustered(5_000, 16, rng)
    ids = np.array([f"item-{i}" for i in range(len(x))], dtype=object)
    index = ScannIndex.build(x, ids, item_tower_version="v20260101T000000000Z-abcdef")
    index.save(tmp_path / "a")
    # The registry copies version directories: the copy must load on its own.
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    loaded = load_index(tmp_path / "b")
    assert isinstance(loaded, ScannIndex)
    assert loaded.item_tower_version == "v20260101T000000000Z-abcdef"
    assert loaded.settings == index.settings
    s1, r1 = index.search(x[:50], 20)
    s2, r2 = loaded.search(x[:50], 20)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2)
    assert list(loaded.item_ids[r2[0, :3]]) == list(ids[r1[0, :3]])
