"""The event log: validated, idempotent appends; atomic files; time-range reads; compaction."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from core.eventlog import EventLog, Rejection
from core.schema import EVENT_SCHEMA

T0 = datetime(2025, 3, 1, 22, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=2)  # the fixed clock: every event below is within the time bounds


def _log(uri: str) -> EventLog:
    return EventLog(uri, clock=lambda: NOW)


def _event(i: int, tenant: str = "acme", hours: float = 0.0, **kw) -> dict:
    row = {
        "event_id": f"e{i}",
        "tenant_id": tenant,
        "user_id": f"u{i % 3}",
        "item_id": f"i{i % 5}",
        "event_type": "click",
        "ts": (T0 + timedelta(hours=hours)).isoformat(),
    }
    return {**row, **kw}


def test_malformed_rows_are_rejected_and_good_rows_kept(tmp_path: Path) -> None:
    log = _log(str(tmp_path / "events"))
    rows = [
        _event(0),
        _event(1, event_type="purchase"),
        _event(2, value=-1),
        {k: v for k, v in _event(3).items() if k != "ts"},
        _event(4, colour="red"),
        "not an object",
        _event(6, tenant="globex"),
        _event(7, propensity=0.0),
        _event(8, hours=1),
    ]
    result = log.append(rows, tenant="acme")
    assert result.accepted == ["e0", "e8"]
    assert result.duplicates == []
    assert [(r.index, r.event_id, r.field) for r in result.rejected] == [
        (1, "e1", "event_type"),
        (2, "e2", "value"),
        (3, "e3", "ts"),
        (4, "e4", "colour"),
        (5, None, "event"),
        (6, "e6", "tenant_id"),
        (7, "e7", "propensity"),
    ]
    assert all(isinstance(r, Rejection) and r.reason for r in result.rejected)
    assert "not 'acme'" in result.rejected[5].reason
    assert log.read("acme").column("event_id").to_pylist() == ["e0", "e8"]


def test_duplicate_ids_are_idempotent_across_calls_and_instances(tmp_path: Path) -> None:
    uri = str(tmp_path / "events")
    first = _log(uri).append([_event(0), _event(1), _event(1)])
    assert first.accepted == ["e0", "e1"] and first.duplicates == ["e1"]
    second = _log(uri).append([_event(1), _event(2)])  # a fresh instance loads seen ids
    assert second.accepted == ["e2"] and second.duplicates == ["e1"]
    log = _log(uri)
    again = log.append([_event(2)])
    assert again.accepted == [] and again.duplicates == ["e2"]
    assert sorted(log.read("acme").column("event_id").to_pylist()) == ["e0", "e1", "e2"]


def test_concurrent_appends_of_the_same_ids_write_each_once(tmp_path: Path) -> None:
    log = _log(str(tmp_path / "events"))
    batch = [_event(i, hours=i / 10) for i in range(50)]
    results = []
    threads = [threading.Thread(target=lambda: results.append(log.append(batch))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.accepted) for r in results) == 50
    assert log.read("acme").num_rows == 50


def test_time_range_and_type_reads(tmp_path: Path) -> None:
    log = _log(str(tmp_path / "events"))
    log.append([_event(i, hours=i, event_type="click" if i % 2 else "like") for i in range(10)])
    assert len(log.files("acme")) == 2  # 22:00 on Mar 1 + 10 h crosses midnight UTC
    window = log.read("acme", start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=5))
    assert window.column("event_id").to_pylist() == ["e2", "e3", "e4"]
    assert window.schema == EVENT_SCHEMA
    likes = log.read("acme", start=(T0 + timedelta(hours=3)).isoformat(), event_types=["like"])
    assert likes.column("event_id").to_pylist() == ["e4", "e6", "e8"]
    cols = log.read("acme", columns=["event_id", "ts"])
    assert cols.column_names == ["event_id", "ts"] and cols.num_rows == 10
    assert log.read("globex").num_rows == 0
    with pytest.raises(ValueError, match="unknown event types"):
        log.read("acme", event_types=["purchase"])


def test_compact_keeps_every_event_exactly_once(tmp_path: Path) -> None:
    log = _log(str(tmp_path / "events"))
    for i in range(6):
        log.append([_event(j, hours=j) for j in range(i * 5, i * 5 + 5)])
    # The bulk path does not deduplicate: simulate a crash-replayed import.
    replay = pa.Table.from_pylist(
        [{**_event(3, hours=3), "ts": T0 + timedelta(hours=3), "value": 1.0}], schema=EVENT_SCHEMA
    )
    log.write_table(replay)
    before = log.read("acme")
    files_before = len(log.files("acme"))
    stats = log.compact("acme")
    after = log.read("acme")
    assert stats["duplicates_removed"] == 1 and stats["rows"] == 30
    assert stats["files_before"] == files_before > stats["files_after"] == len(log.files("acme"))
    assert sorted(after.column("event_id").to_pylist()) == sorted(f"e{i}" for i in range(30))
    assert after.num_rows == before.num_rows - 1
    assert log.compact("acme")["duplicates_removed"] == 0


def test_write_table_checks_the_schema(tmp_path: Path) -> None:
    log = _log(str(tmp_path / "events"))
    good = pa.Table.from_pylist([{**_event(1), "ts": T0, "value": 1.0}], schema=EVENT_SCHEMA)
    with pytest.raises(ValueError, match=r"missing columns \['propensity'\]"):
        log.write_table(good.drop_columns(["propensity"]))
    bad_type = good.set_column(4, "event_type", pa.array(["purchase"]))
    with pytest.raises(ValueError, match="unknown event_type 'purchase'"):
        log.write_table(bad_type)
    log.write_table(good)
    assert log.append([_event(1)]).duplicates == ["e1"]  # seen ids are loaded from disk
    assert log.read("acme").num_rows == 1
    assert log.tenants() == ["acme"]


def test_hidden_temp_files_are_invisible(tmp_path: Path) -> None:
    log = _log(str(tmp_path / "events"))
    log.append([_event(1)])
    part = Path(log.files("acme")[0])
    (part.parent / f".tmp-deadbeef-{part.name}").write_bytes(b"half a parquet file")
    (part.parent / f"_tmp-{part.name}").write_bytes(b"half a parquet file")
    assert log.read("acme").num_rows == 1
    assert len(log.files("acme")) == 1
