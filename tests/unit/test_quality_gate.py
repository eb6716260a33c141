"""The data-quality gate before training (training.quality_gate), without Ray: the same block
summaries and verdicts the Ray Data job computes, over tiny synthetic data and damaged copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from core.catalogue import Catalogue
from core.eventlog import EventLog
from core.train_config import JobConfig, QualityGateConfig
from training import common
from training.quality_checks import (
    DataQualityRefused,
    gate_for_training,
    judge,
    local_stats,
    table_stats,
    users_table,
)

REPO = Path(__file__).resolve().parents[2]
WEEK_US = 7 * 86_400 * 10**6


def _known(data: Path, tenant: str):
    items = pa.array(Catalogue.load(str(data), tenant).item_ids.tolist(), pa.string())
    return items, users_table(str(data), tenant)["user_id"].combine_chunks()


def _failed(table: pa.Table, data: Path, tenant: str = "acme") -> list[str]:
    checks = judge(table_stats(table, QualityGateConfig(), *_known(data, tenant)), QualityGateConfig())
    return sorted(k for k, c in checks.items() if not c["ok"])


def _last_week(table: pa.Table) -> pa.ChunkedArray:
    ts = pc.cast(pc.cast(table["ts"], pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.greater(ts, pc.max(ts).as_py() - WEEK_US)


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_normal_synthetic_data_passes(tiny_data: Path, tenant: str) -> None:
    events = EventLog(str(tiny_data / "events")).read(tenant)
    assert _failed(events, tiny_data, tenant) == []


def test_half_of_the_last_weeks_events_missing_fails_on_volume(tiny_data: Path) -> None:
    events = EventLog(str(tiny_data / "events")).read("acme")
    coin = pa.array(np.random.default_rng(0).random(events.num_rows) < 0.5)
    assert _failed(events.filter(pc.invert(pc.and_(_last_week(events), coin))), tiny_data) == ["volume"]


def test_a_vanished_event_type_fails(tiny_data: Path) -> None:
    events = EventLog(str(tiny_data / "events")).read("acme")
    no_likes = events.filter(pc.invert(pc.and_(_last_week(events), pc.equal(events["event_type"], "like"))))
    assert _failed(no_likes, tiny_data) == ["label_rate:like"]
    checks = judge(table_stats(no_likes, QualityGateConfig(), *_known(tiny_data, "acme")), QualityGateConfig())
    assert "vanished" in checks["label_rate:like"]["detail"]


def test_unknown_items_future_and_malformed_rows_fail(tiny_data: Path) -> None:
    events = EventLog(str(tiny_data / "events")).read("acme")
    n = events.num_rows
    def replaced(table: pa.Table, name: str, values) -> pa.Table:
        i = table.schema.get_field_index(name)
        return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))

    bad = replaced(events, "item_id", [f"ghost{i}" if i % 20 == 0 else x for i, x in enumerate(events["item_id"].to_pylist())])
    assert "unknown_items" in _failed(bad, tiny_data)
    future = pa.array([4_102_444_800 * 10**6] * 5, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    tail = replaced(events.slice(0, 5), "ts", future)
    assert _failed(pa.concat_tables([events, tail]), tiny_data) == ["future_timestamps"]
    values = np.asarray(events["value"].to_numpy(), dtype=np.float64).copy()
    values[: n // 100] = np.nan
    nan = replaced(events, "value", values)
    assert _failed(nan, tiny_data) == ["malformed"]


@pytest.fixture
def damaged(tiny_data: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of tiny's acme data whose last week lost half its events, and a platform config
    pointing at it."""
    data = tmp_path / "data"
    for part in ("catalogue", "users", "synth.json"):
        src = tiny_data / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, data / part)
    events = EventLog(str(tiny_data / "events")).read("acme")
    coin = pa.array(np.random.default_rng(1).random(events.num_rows) < 0.5)
    EventLog(str(data / "events")).write_table(events.filter(pc.invert(pc.and_(_last_week(events), coin))))
    platform = yaml.safe_load((REPO / "configs/platform.yaml").read_text())
    platform["storage"] = {"data": str(data), "events": str(data / "events"),
                           "registry": str(tmp_path / "registry"), "decisions": str(tmp_path / "decisions")}  # fmt: skip
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(platform))
    monkeypatch.setenv("RECSYS_CONFIG", str(tmp_path / "platform.yaml"))
    monkeypatch.chdir(REPO)
    return tmp_path


def test_training_refuses_to_start_unless_told_why_and_the_lineage_says_so(damaged: Path) -> None:
    storage = common.JobStorage(JobConfig(tenant="acme", work_dir=str(damaged / "work")))
    with pytest.raises(DataQualityRefused, match="volume.*--allow-bad-data"):
        gate_for_training(storage, None, stats=local_stats)
    record = gate_for_training(storage, "known outage 2025-01-25, approved by ada", stats=local_stats)
    assert record["passed"] is False and record["failed"] == ["volume"]
    assert record["override_reason"] == "known outage 2025-01-25, approved by ada"
    assert Path(record["report"]).is_file()  # the report of this data is kept and reused
    storage.data_quality = record
    assert common.lineage(storage).data_quality["override_reason"].startswith("known outage")
