"""Offline-evaluation plumbing: the example cache key, the pipeline's train-period events and
offline timeouts, and the GroupLens sample the MovieLens path is tested with."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from core.config import read_yaml
from core.train_config import JobConfig
from datagen.grouplens_sample import write_ml1m
from datagen.movielens import detect_layout, load_movielens
from training.common import JobStorage
from training.evaluate_pipeline import OFFLINE_TIMEOUT_MS, offline_platform, train_period_events
from training.examples import examples_dir

ROOT = Path(__file__).resolve().parents[2]


def _storage(data: Path, tmp: Path) -> JobStorage:
    platform = read_yaml(ROOT / "configs/platform.yaml")
    platform["storage"] = {"data": str(data), "events": str(data / "events"), "registry": str(tmp / "reg"), "decisions": str(tmp / "dec")}
    (tmp / "platform.yaml").write_text(yaml.safe_dump(platform))
    return JobStorage(JobConfig(platform_config=str(tmp / "platform.yaml"), work_dir=str(tmp / "work")))


def test_example_cache_key_changes_with_the_data_not_only_its_version(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    storage = _storage(data, tmp_path)
    key = examples_dir(storage, "two_tower")
    # A copy of the same data elsewhere reuses the examples.
    assert key.name == examples_dir(_storage(tiny_data, tmp_path), "two_tower").name
    # Regenerated data under an unchanged dataset_version (a generator fix) must not.
    summary = json.loads((data / "synth.json").read_text())
    summary["rows"]["acme"]["events"] += 1
    (data / "synth.json").write_text(json.dumps(summary))
    assert storage.dataset_version() == summary["dataset_version"]
    assert examples_dir(storage, "two_tower") != key
    (data / "synth.json").write_text(json.dumps({**summary, "rows": json.loads((tiny_data / "synth.json").read_text())["rows"]}))
    events = sorted((data / "events").rglob("*.parquet"))
    events = [p for p in events if "tenant_id=acme" in str(p)]
    events[-1].write_bytes(events[-1].read_bytes() + b"\0")
    assert examples_dir(storage, "two_tower") != key


def _events(rows: list[tuple[str, str, float]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": ["click"] * len(rows),
            "ts": pa.array([datetime.fromtimestamp(r[2], UTC) for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )


def test_train_period_ends_at_each_users_own_test_time() -> None:
    events = _events([("a", "i1", 100.0), ("a", "i2", 200.0), ("a", "i3", 300.0), ("b", "i1", 250.0), ("c", "i9", 999.0)])
    kept = train_period_events(events, {"a": 200.0, "b": 400.0})
    got = sorted(zip(kept["user_id"].to_pylist(), kept["item_id"].to_pylist(), strict=True))
    # a's test click (ts 200) and everything after it go; b keeps its earlier event; c has no
    # test interaction and keeps everything.
    assert got == [("a", "i1"), ("b", "i1"), ("c", "i9")]
    assert train_period_events(events, {}).num_rows == events.num_rows


def test_the_cutoff_moves_back_to_the_request_that_showed_the_test_item() -> None:
    from training.evaluate_pipeline import request_cutoffs

    ts = lambda t: datetime.fromtimestamp(t, UTC)  # noqa: E731
    events = pa.table(
        {
            "user_id": ["a", "a", "a", "a", "b"],
            "item_id": ["i1", "i2", "i1", "i3", "i4"],
            "event_type": ["impression", "impression", "click", "impression", "rating"],
            "ts": pa.array([ts(100.0), ts(100.0), ts(104.0), ts(150.0), ts(300.0)], pa.timestamp("us", tz="UTC")),
            "request_id": ["r1", "r1", "r1", "r2", None],
        }
    )
    # a's test click at 104 came from request r1 (shown at 100): the state ends before r1's
    # impressions. b's rating has no request: its own time.
    got = request_cutoffs(events, {"a": 104.0, "b": 300.0})
    assert got == {"a": 100.0, "b": 300.0}
    kept = train_period_events(events, got)
    assert kept["user_id"].to_pylist() == []


def test_offline_platform_raises_every_stage_timeout() -> None:
    from core.config import load_platform_config

    platform = offline_platform(load_platform_config(ROOT / "configs/platform.yaml"))
    for tenant in platform.tenants:
        for surface in tenant.surfaces.values():
            assert surface.ranker.timeout_ms == OFFLINE_TIMEOUT_MS
            assert {s.timeout_ms for s in surface.sources} == {OFFLINE_TIMEOUT_MS}


def test_grouplens_sample_imports_through_the_movielens_loader(tmp_path: Path) -> None:
    raw = write_ml1m(tmp_path / "raw", n_users=40, n_items=30, seed=1)
    assert detect_layout(raw) == ("ml-1m", raw)
    n_ratings = len((raw / "ratings.dat").read_text(encoding="latin-1").splitlines())
    summary = load_movielens(str(raw), str(tmp_path / "data"), tenant="acme")
    rows = summary.rows["acme"]
    assert rows["users"] == 40 and rows["event_types"]["rating"] == n_ratings
    assert 0 < rows["event_types"]["like"] < n_ratings
    # Deterministic in the seed.
    again = write_ml1m(tmp_path / "again", n_users=40, n_items=30, seed=1)
    assert (again / "ratings.dat").read_bytes() == (raw / "ratings.dat").read_bytes()


def test_funnel_says_where_the_test_item_went():
    from datetime import UTC, datetime

    from core.contracts import CandidateTable, DecisionRecord, RemovalRecord, SlateRecord
    from training.evaluate_pipeline import _funnel

    def record(utility, removals=(), slate=()):
        return DecisionRecord(
            request_id="r", tenant_id="acme", user_id="u", surface="home", k=2,
            at=datetime.now(UTC), experiment={"id": "", "arm": "default"}, versions={},
            sources=[], stage_latency_ms={},
            candidates=CandidateTable(item_id=["a", "b", "c"], utility=utility),
            removals=[RemovalRecord(item_id=i, rule="x", reason=why) for i, why in removals],
            slate=[SlateRecord(item_id=i, rank=r, score=0.0, sources=[], reasons=[])
                   for r, i in enumerate(slate)],
        )  # fmt: skip

    assert _funnel(record([1.0, 0.5, 0.1]), {"z"}, 2) == ["not_retrieved"]
    assert _funnel(record([1.0, 0.5, 0.1], slate=["a", "b"]), {"b"}, 2) == [
        "retrieved", "utility_top2", "in_slate", "in_slate_by:?"]  # fmt: skip
    assert _funnel(record([1.0, 0.5, 0.1], slate=["a", "b"]), {"c"}, 2) == ["retrieved"]
    capped = record([1.0, 0.5, 0.1], removals=[("a", "frequency_cap")], slate=["b", "c"])
    assert _funnel(capped, {"a"}, 2) == ["retrieved", "removed:frequency_cap", "utility_top2"]
    hidden = record([1.0, None, 0.1], removals=[("b", "hidden_by_user")], slate=["a", "c"])
    assert _funnel(hidden, {"b"}, 2) == ["retrieved", "removed:hidden_by_user"]


def test_held_out_excludes_every_earlier_interaction_of_the_user() -> None:
    """The protocol's task on a split: the held-out item, and *all* the user's earlier items
    excluded (not only the last ``HISTORY_LEN`` the query sees); unknown items dropped."""
    import numpy as np

    from training.evaluate import held_out

    data = {
        "user_id": np.array(["a", "a", "a", "a", "b", "b", "b", "c"]),
        "item": np.array([3, 5, 9, 7, 1, 2, 0, 4]),  # index + 1; 0 = unknown item
        "split": np.array(["train", "train", "validation", "test", "train", "validation", "test", "train"]),
    }
    rows, exclude, relevant = held_out(data, "validation", max_users=10, seed=0)
    assert rows.tolist() == [2, 5]
    assert [e.tolist() for e in exclude] == [[2, 4], [0]]
    assert relevant == [[8], [1]]
    rows, exclude, relevant = held_out(data, "test", max_users=10, seed=0)
    assert rows.tolist() == [3] and relevant == [[6]]  # b's test item is unknown
    # At test time the validation item is an earlier interaction too: excluded, as serving does.
    assert [e.tolist() for e in exclude] == [[2, 4, 8]]
    sampled, _, _ = held_out(data, "validation", max_users=1, seed=0)
    assert len(sampled) == 1 and sampled.tolist() == held_out(data, "validation", 1, 0)[0].tolist()


def test_review_compares_with_production_only_on_the_same_feature_schema() -> None:
    """A candidate worse than production fails review; after a feature-definition change the
    production metrics measure other inputs, so the comparison is skipped and said so."""
    from datetime import UTC, datetime

    from core.features import feature_schema_hash
    from core.manifest import Lineage, Manifest, Owner
    from core.train_config import ReviewConfig
    from training.review import check_candidate

    def manifest(version: str, schema: str, recall: float) -> Manifest:
        return Manifest(
            kind="two_tower",
            tenant="acme",
            version=version,
            created_at=datetime(2026, 11, 22, tzinfo=UTC),
            owner=Owner(team="t", primary="p@example.com", escalation="#e", runbook="r.md"),
            lineage=Lineage(feature_schema_hash=schema),
            metrics={"val_recall@50": recall, "val_ndcg@10": 0.1},
        )

    code = feature_schema_hash()
    cand = manifest("v2", code, 0.50)
    cfg = ReviewConfig(tolerance=0.02, min_index_recall_at_100=0.95)
    same = check_candidate(cand, manifest("v1", code, 0.60), None, cfg)
    assert not same["not_worse_than_production"]["ok"]
    assert "val_recall@50 0.5000 < 0.6000" in same["not_worse_than_production"]["detail"]
    other = check_candidate(cand, manifest("v1", "0123456789abcdef", 0.60), None, cfg)
    assert other["not_worse_than_production"]["ok"]
    assert "not comparable" in other["not_worse_than_production"]["detail"]
    assert other["feature_schema_hash"]["ok"]  # the candidate itself is on the code's schema


def test_click_simulator_scores_lists_with_the_generators_click_model(tiny_data, tmp_path) -> None:
    """``expected_ctr@10`` uses the generator's own click model: a hand-computed probability for
    one (user, item, position); the true model's own top 10 earns more clicks than popularity's
    or a random list; data without ``truth/`` has no simulator."""
    import math

    import numpy as np
    import pyarrow.parquet as pq
    import pytest

    from core.catalogue import Catalogue
    from datagen.sessions import OUTCOME_MODEL
    from training.simulated import ClickSimulator

    catalogue = Catalogue.load(str(tiny_data), "acme")
    sim = ClickSimulator.load(str(tiny_data), "acme", catalogue)
    assert sim is not None and ClickSimulator.load(str(tmp_path), "acme", catalogue) is None
    truth = pq.read_table(tiny_data / "truth" / "tenant_id=acme" / "items.parquet")
    users = pq.read_table(tiny_data / "truth" / "tenant_id=acme" / "users.parquet")
    item_id, v, z = truth["item_id"][3].as_py(), np.array(truth["vector"][3].as_py()), truth["z_pop"][3].as_py()
    user_id, u = users["user_id"][5].as_py(), np.array(users["vector"][5].as_py())
    m = OUTCOME_MODEL["click"]
    logit = m["affinity"] * OUTCOME_MODEL["affinity_scale"] * float(u @ v) + m["z_pop"] * z + m["bias"] + m["position"] * 2
    idx = int(catalogue.index_of([item_id])[0])
    got = sim.click_probability([user_id], np.array([[-1, -1, idx]]))
    assert got[0, :2].tolist() == [0.0, 0.0]  # empty slots earn nothing
    assert got[0, 2] == pytest.approx(1 / (1 + math.exp(-logit)), rel=1e-5)

    uids = users["user_id"].to_pylist()[:50]
    best = np.argsort(-sim.item_logits(uids), axis=1)[:, :10]
    popular = np.tile(np.argsort(-sim.z_pop)[:10], (len(uids), 1))
    rand = np.random.default_rng(0).integers(0, len(catalogue), (len(uids), 10))
    assert sim.expected_ctr(uids, best) > sim.expected_ctr(uids, popular) > sim.expected_ctr(uids, rand)


def test_stage_orders_rank_only_scored_candidates_by_each_stage():
    """Removed candidates (no utility) never appear; the two-tower order uses its own source's
    best score and puts candidates it did not retrieve last; click and utility orders read the
    record's columns."""
    from types import SimpleNamespace

    from core.contracts import CandidateTable
    from training.evaluate_pipeline import _stage_orders

    table = CandidateTable(
        item_id=["a", "b", "c", "d"],
        utility=[0.2, 0.9, None, 0.5],
        task_scores={"click": [0.3, 0.1, 0.9, 0.2]},
        provenance_row=[0, 1, 1, 2, 3],
        provenance_source=["two_tower", "two_tower", "trending", "two_tower", "trending"],
        provenance_version=["v"] * 5,
        provenance_score=[0.4, 0.7, 99.0, 0.95, 50.0],
        provenance_rank=[0, 1, 0, 2, 1],
    )
    got = _stage_orders(SimpleNamespace(candidates=table), k=3)
    assert got == {
        "by_two_tower_score": ["b", "a", "d"],  # c removed; d only from trending: last
        "by_ranker_click": ["a", "d", "b"],
        "by_ranker_utility": ["b", "d", "a"],
    }


def test_gap_validation_holds_out_each_validation_users_last_train_interaction():
    """``benchmarks.tune_two_tower.gap_split``: the latest train row (by time, whatever the row
    order) of every user with a validation row becomes ``gap``; other users are unchanged."""
    from benchmarks.tune_two_tower import gap_split

    users = np.array(["a", "b", "a", "a", "a", "b", "c", "c", "c"])
    split = np.array(["train", "train", "validation", "train", "test", "train", "train", "train", "validation"])
    ts = np.array([1.0, 1.0, 5.0, 3.0, 6.0, 2.0, 9.0, 7.0, 10.0])
    out = gap_split(split, users, ts)
    assert out.tolist() == ["train", "train", "validation", "gap", "test", "train", "gap", "train", "validation"]
    assert split[3] == "train"  # the input is not modified
