from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pytest

from core.features import UserState
from retrieval.cooccurrence import ItemToItemIndex
from retrieval.sources import (
    EditorialSource,
    FreshSource,
    ItemToItemSource,
    SourceContext,
    TrendingSource,
    TwoTowerArtifacts,
    TwoTowerSource,
    VersionMismatch,
)
from retrieval.sources.editorial import EditorialSourceConfig
from retrieval.sources.fresh import FreshSourceConfig
from retrieval.sources.item_to_item import ItemToItemSourceConfig
from retrieval.sources.trending import TrendingSourceConfig
from retrieval.sources.two_tower import TwoTowerSourceConfig
from tests.unit.serving_fixtures import NOW, catalogue, events, query


def run(coro):
    return asyncio.run(coro)


def _ctx(**kw) -> SourceContext:
    return SourceContext(
        tenant_id="acme", surface="home", catalogue=kw.pop("catalogue", None), **kw
    )


def test_trending_ranks_by_decayed_count_and_respects_surface() -> None:
    h = timedelta(hours=1)
    log = events(
        [
            # "old" had three likes two days ago; "new" two likes an hour ago: with a 12h
            # half-life, recency wins.
            *[(f"u{n}", "old", "like", NOW - 48 * h, "home") for n in range(3)],
            *[(f"u{n}", "new", "click", NOW - h, "home") for n in range(2)],
            ("u9", "other_surface", "like", NOW - h, "item_page"),
            ("u9", "unattributed", "like", NOW - 30 * h, None),
            ("u9", "shown_only", "impression", NOW - h, "home"),
        ]
    )
    cfg = TrendingSourceConfig(name="trending", kind="trending", half_life_hours=12)
    src = TrendingSource.from_config(cfg, _ctx(events=log))
    res = run(src.retrieve(query(), None, 10))
    assert [c.item_id for c in res.candidates] == ["new", "old", "unattributed"]
    assert [c.rank for c in res.candidates] == [0, 1, 2]
    assert res.candidates[0].score > res.candidates[1].score

    # A live event counts at once; one for another surface or tenant does not.
    for _ in range(5):
        src.observe(
            {
                "tenant_id": "acme",
                "item_id": "live",
                "event_type": "like",
                "ts": NOW,
                "surface": "home",
            }
        )
    src.observe(
        {
            "tenant_id": "globex",
            "item_id": "foreign",
            "event_type": "like",
            "ts": NOW,
            "surface": "home",
        }
    )
    top = run(src.retrieve(query(), None, 10)).candidates
    assert top[0].item_id == "live"
    assert "foreign" not in {c.item_id for c in top}


def test_item_to_item_neighbours_from_hand_built_log() -> None:
    h = timedelta(hours=1)
    t0 = NOW - 100 * h
    log = events(
        [
            # a and b co-occur for three users; a and c for one; d is far outside the window.
            ("u1", "a", "click", t0),
            ("u1", "b", "like", t0 + h),
            ("u2", "a", "click", t0),
            ("u2", "b", "click", t0 + 2 * h),
            ("u3", "b", "click", t0),
            ("u3", "a", "click", t0 + h),
            ("u3", "c", "click", t0 + 2 * h),
            ("u4", "a", "click", t0),
            ("u4", "d", "click", t0 + 72 * h),
            ("u5", "a", "impression", t0),
            ("u5", "e", "impression", t0),
        ]
    )
    index = ItemToItemIndex.build(log, tenant_id="acme", window_hours=24)
    nbrs = index.get("a")
    assert [n.item_id for n in nbrs] == ["b", "c"]
    assert nbrs[0].count == 3 and nbrs[1].count == 1
    # cosine: users(a)={1,2,3,4}, users(b)={1,2,3}: 3 / sqrt(12)
    assert nbrs[0].score == pytest.approx(3 / np.sqrt(12))
    assert index.get("e") == ()  # impressions are not interactions

    cfg = ItemToItemSourceConfig(name="i2i", kind="item_to_item", seed_items=2, min_cooccurrence=2)
    src = ItemToItemSource.from_config(cfg, _ctx(cooccurrence=index))
    state = UserState(user_id="u9")
    state.history.extend(["c", "a"])  # most recent last: a is the freshest seed
    res = run(src.retrieve(query(), state, 10))
    assert res.diagnostics["seeds"] == ["a", "c"]
    assert [c.item_id for c in res.candidates] == ["b"]  # (a, c) has count 1 < min 2
    assert res.candidates[0].diagnostics["seeds"] == ["a"]


def _reference_item_to_item(src: ItemToItemSource, seeds: list[str], limit: int):
    """The loop ``ItemToItemSource.retrieve`` replaced (a dict per request), kept verbatim."""
    scores: dict[str, float] = {}
    via: dict[str, list[str]] = {}
    for pos, seed in enumerate(seeds):
        for n in src.index.get(seed):
            if n.count >= src.min_cooccurrence:
                scores[n.item_id] = scores.get(n.item_id, 0.0) + n.score / (pos + 1)
                via.setdefault(n.item_id, []).append(seed)
    ranked = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:limit]
    return [(item, score, via[item]) for item, score in ranked]


@pytest.mark.parametrize("seed", range(8))
def test_item_to_item_on_arrays_answers_as_the_loop_did(seed: int) -> None:
    """Scores summed in seed order (bit for bit), ties by item id, each item's seeds."""
    from retrieval.cooccurrence import Neighbour

    rng = np.random.default_rng(seed)
    items = [f"i{k:03d}" for k in range(60)]
    scores = [0.5, 0.25, 0.1, 1 / 3]  # few values: ties across items and seeds
    nbrs = {i: tuple(Neighbour(str(j), float(rng.choice(scores)), int(rng.integers(1, 4)))
                     for j in rng.choice(items, int(rng.integers(0, 30)), replace=False))
            for i in items}  # fmt: skip
    cfg = ItemToItemSourceConfig(name="i2i", kind="item_to_item", seed_items=5, min_cooccurrence=2)
    src = ItemToItemSource.from_config(cfg, _ctx(cooccurrence=ItemToItemIndex(nbrs, "v")))
    state = UserState(user_id="u9")
    state.history.extend(rng.choice(items, 8).tolist())
    for limit in (3, 50):
        for _ in range(2):  # the second time from the seeds' cached columns
            res = run(src.retrieve(query(), state, limit))
            want = _reference_item_to_item(src, res.diagnostics["seeds"], limit)
            got = [(c.item_id, c.score, c.diagnostics["seeds"]) for c in res.candidates]
            assert got == want and [c.rank for c in res.candidates] == list(range(len(want)))


def test_fresh_returns_newest_available_items_within_max_age() -> None:
    h = timedelta(hours=1)
    cat = catalogue(
        [
            {"item_id": "newest", "created_at": NOW - h},
            {"item_id": "older", "created_at": NOW - 10 * h},
            {"item_id": "too_old", "created_at": NOW - 100 * h},
            {"item_id": "future", "created_at": NOW + h},
            {"item_id": "withdrawn", "created_at": NOW - 2 * h, "available_until": NOW - h},
        ]
    )
    src = FreshSource.from_config(
        FreshSourceConfig(name="fresh", kind="fresh", max_age_hours=24), _ctx(catalogue=cat)
    )
    res = run(src.retrieve(query(), None, 10))
    assert [c.item_id for c in res.candidates] == ["newest", "older"]
    assert 0 < res.candidates[1].score < res.candidates[0].score <= 1
    assert res.candidates.rows.tolist() == cat.index_of(["newest", "older"]).tolist()
    assert len(run(src.retrieve(query(), None, 1)).candidates) == 1


def test_editorial_keeps_editor_order_and_limit() -> None:
    cfg = EditorialSourceConfig(name="editorial", kind="editorial", items=["x", "y", "x", "z"])
    src = EditorialSource.from_config(cfg, _ctx())
    res = run(src.retrieve(query(), None, 2))
    assert [c.item_id for c in res.candidates] == ["x", "y"]
    assert res.version.startswith("editorial:")


class DotProductModel:
    """A real query encoder: the mean of the user's history item vectors."""

    def __init__(self, item_vectors: np.ndarray):
        self.item_vectors = item_vectors

    def encode_queries(self, batch):
        hist = batch["history"]
        out = np.zeros((len(hist), self.item_vectors.shape[1]), dtype=np.float32)
        for b, row in enumerate(hist):
            idx = row[row > 0] - 1
            if len(idx):
                out[b] = self.item_vectors[idx].mean(0)
        return out


def test_two_tower_source_searches_index_and_refuses_mismatched_versions() -> None:
    from retrieval.index import BruteForceIndex

    cat = catalogue([{"item_id": f"i{n}"} for n in range(4)])
    vecs = np.eye(4, dtype=np.float32)
    vecs[1] = [0.9, 0.1, 0, 0]
    model = DotProductModel(vecs)
    index = BruteForceIndex(vecs, cat.item_ids, "tower-v1")
    art = TwoTowerArtifacts(model, index, "tower-v1", "index-v1", index.item_tower_version)
    src = TwoTowerSource.from_config(
        TwoTowerSourceConfig(name="two_tower", kind="two_tower"),
        _ctx(catalogue=cat, two_tower=art),
    )
    state = UserState(user_id="u1")
    state.history.append("i0")
    res = run(src.retrieve(query(), state, 2))
    assert [c.item_id for c in res.candidates] == ["i0", "i1"]
    assert res.version == "tower-v1/index-v1"

    with pytest.raises(VersionMismatch, match="tower-v2"):
        TwoTowerArtifacts(model, index, "tower-v2", "index-v1", "tower-v1")


def test_rows_found_by_the_sources_are_the_catalogue_rows_of_their_ids() -> None:
    """The two-tower hits' and the fresh items' catalogue rows ride with their answers, and
    the merge's batch carries each item's row: the same rows as looking the ids up (the
    index in another order than the catalogue, with an item the catalogue lacks)."""
    from retrieval.index import BruteForceIndex
    from serving.merge import merge

    h = timedelta(hours=1)
    cat = catalogue([{"item_id": f"i{n}", "created_at": NOW - (n + 1) * h} for n in range(6)])
    ids = np.array(["i5", "gone", "i3", "i1", "i0", "i2"], dtype=object)
    vecs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    index = BruteForceIndex(vecs, ids, "tower-v1")
    art = TwoTowerArtifacts(DotProductModel(vecs), index, "tower-v1", "index-v1", index.item_tower_version)
    tt = TwoTowerSource.from_config(TwoTowerSourceConfig(name="two_tower", kind="two_tower"),
                                    _ctx(catalogue=cat, two_tower=art))  # fmt: skip
    fresh = FreshSource.from_config(FreshSourceConfig(name="fresh", kind="fresh", max_age_hours=4),
                                    _ctx(catalogue=cat))  # fmt: skip
    state = UserState(user_id="u1")
    state.history.append("i0")
    a, b = run(tt.retrieve(query(), state, 6)), run(fresh.retrieve(query(), None, 3))
    for res in (a, b):
        assert res.candidates.rows.tolist() == cat.index_of(res.candidates.item_ids).tolist()
    assert "gone" in a.candidates.item_ids and -1 in a.candidates.rows.tolist()
    editorial = EditorialSource("editorial", ["i4", "nowhere", "i5"])
    merged = merge([a, run(editorial.retrieve(query(), None, 3)), b])
    assert merged._catalogue is cat  # carried from the sources, not looked up
    assert merged.rows(cat).tolist() == cat.index_of(merged.item_ids).tolist()
    assert merged[1:].rows(cat).tolist() == cat.index_of(merged.item_ids[1:]).tolist()
