"""Events never fail as a batch and never lie (issue 15): per-row validation and bounds,
conflicts, the rows to apply, idempotency across instances and restarts, durability and
compaction under concurrent appends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import storage as storage_module
from core.event_compaction import BackgroundCompactor
from core.event_ids import INDEX_NAME
from core.eventlog import EventLog
from core.schema import EventBounds, RowError, normalize_event

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def _log(uri, **kw) -> EventLog:
    return EventLog(str(uri), clock=lambda: NOW, **kw)


def _event(i, **kw) -> dict:
    row = {"event_id": f"e{i}", "tenant_id": "acme", "user_id": "u1", "item_id": "i1",
           "event_type": "click", "ts": (NOW - timedelta(minutes=i)).isoformat()}  # fmt: skip
    return {**row, **kw}


def _stored_ids(log: EventLog) -> list[str]:
    return sorted(log.read("acme").column("event_id").to_pylist())


# ---- 1. every row on its own; no exception escapes; valid rows of the batch are stored ------

BAD_ROWS = [
    ({"ts": 1e20}, "ts"),
    ({"ts": -1e11}, "ts"),
    ({"ts": "9999-12-31T23:59:59-05:00"}, "ts"),  # overflows when converted to UTC
    ({"ts": "0001-01-01T00:00:00+05:00"}, "ts"),
    ({"ts": 10**400}, "ts"),
    ({"position": 2**31}, "position"),
    ({"position": 10**30}, "position"),
    ({"value": 10**400}, "value"),
    ({"propensity": 10**400}, "propensity"),
    ({"event_id": "bad\ud800id"}, "event_id"),
    ({"user_id": "u\udfff"}, "user_id"),
    ({"item_id": "i\x00"}, "item_id"),
    ({"surface": "home\n"}, "surface"),
    ({"request_id": "r" * 129}, "request_id"),
    ({"ts": "2026-06-01T12:00:00\x00"}, "ts"),
]


@pytest.mark.parametrize("patch,field", BAD_ROWS)
def test_a_bad_row_is_rejected_by_field_and_its_batch_is_stored(tmp_path, patch, field):
    log = _log(tmp_path)
    result = log.append([_event(1), _event(2, **patch), _event(3)], tenant="acme")
    assert [(r.index, r.field) for r in result.rejected] == [(1, field)]
    assert result.rejected[0].reason
    json.dumps(asdict(result.rejected[0]), ensure_ascii=False).encode()  # the 422/200 body
    assert result.accepted == ["e1", "e3"]
    assert _stored_ids(log) == ["e1", "e3"]


def test_normalize_event_raises_only_row_errors():
    for patch, field in BAD_ROWS:
        with pytest.raises(RowError) as err:
            normalize_event(_event(1, **patch))
        assert err.value.field == field
    with pytest.raises(RowError):
        normalize_event({"\ud800": 1, **_event(1)})


def test_time_bounds_reject_too_old_and_too_far_ahead_and_are_configurable(tmp_path):
    rows = [
        _event(1, ts=(NOW - timedelta(days=31)).isoformat()),
        _event(2, ts=(NOW - timedelta(days=29)).isoformat()),
        _event(3, ts=(NOW + timedelta(minutes=4)).isoformat()),
        _event(4, ts=(NOW + timedelta(minutes=6)).isoformat()),
        _event(5, ts="2126-01-01T00:00:00Z"),
        _event(6, ts="0001-01-01T00:00:00Z"),
    ]
    result = _log(tmp_path / "a").append(rows)
    assert result.accepted == ["e2", "e3"]
    assert [(r.event_id, r.field) for r in result.rejected] == [
        ("e1", "ts"), ("e4", "ts"), ("e5", "ts"), ("e6", "ts")]  # fmt: skip
    assert "in the past" in result.rejected[0].reason
    assert "in the future" in result.rejected[1].reason
    tight = EventBounds(max_age=timedelta(hours=1), max_future_skew=timedelta(0))
    result = _log(tmp_path / "b", bounds=tight).append(rows + [_event(7)])
    assert result.accepted == ["e7"]


def test_unknown_items_and_surfaces_are_rejected_when_the_catalogue_is_given(tmp_path):
    log = _log(tmp_path)
    rows = [_event(1, surface="home"), _event(2, item_id="nope"), _event(3, surface="typo"),
            _event(4)]  # fmt: skip
    result = log.append(rows, tenant="acme", items={"i1"}, surfaces={"home"})
    assert result.accepted == ["e1", "e4"]
    assert [(r.event_id, r.field) for r in result.rejected] == [("e2", "item_id"), ("e3", "surface")]


# ---- 2. a conflict is not a duplicate; the stored rows are returned -------------------------


def test_same_id_with_other_content_is_a_conflict_not_a_duplicate(tmp_path):
    log = _log(tmp_path)
    assert log.append([_event(1)]).accepted == ["e1"]
    result = log.append([_event(1), _event(1, event_type="like"), _event(2), _event(2, value=5)])
    assert result.duplicates == ["e1"]
    assert result.conflicts == ["e1", "e2"]  # e2: in-batch, other content than the accepted one
    assert result.accepted == ["e2"]
    restarted = _log(tmp_path)
    assert restarted.append([_event(1, item_id="i2")]).conflicts == ["e1"]
    assert _stored_ids(restarted) == ["e1", "e2"]


def test_accepted_rows_are_exactly_what_was_stored_even_after_an_invalid_twin(tmp_path):
    """Batch [invalid row with id E, valid hide with id E]: the hide is accepted, and the row to
    apply is the hide itself (the ingress used to match request rows by id and apply nothing)."""
    log = _log(tmp_path)
    bad = _event(1, event_type="hide", ts=1e20)
    hide = _event(1, event_type="hide", item_id="i9", position=3)
    result = log.append([bad, hide], tenant="acme")
    assert result.accepted == ["e1"] and [r.index for r in result.rejected] == [0]
    assert len(result.accepted_rows) == 1
    row = result.accepted_rows[0]
    assert row["event_type"] == "hide" and row["item_id"] == "i9" and row["position"] == 3
    stored = log.read("acme").to_pylist()
    assert stored == [row]


# ---- 3. idempotency across instances (replicas) and restarts -------------------------------


def test_two_instances_on_one_directory_store_an_event_once(tmp_path):
    a, b = _log(tmp_path), _log(tmp_path)
    a.append([_event(1)]), b.append([_event(2)])  # both have loaded their view of the log
    first, second = a.append([_event(3)]), b.append([_event(3)])
    assert first.accepted == ["e3"] and second.duplicates == ["e3"] and second.accepted == []
    assert b.append([_event(1)]).duplicates == ["e1"]
    assert _stored_ids(a) == ["e1", "e2", "e3"]


def test_concurrent_instances_accept_each_id_once(tmp_path):
    logs = [_log(tmp_path) for _ in range(4)]
    batch = [_event(i) for i in range(40)]
    results = []
    threads = [threading.Thread(target=lambda g=g: results.append(g.append(batch))) for g in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e for r in results for e in r.accepted) == sorted(f"e{i}" for i in range(40))
    assert logs[0].read("acme").num_rows == 40


_KILLED_WRITER = """
import os, signal, sys
from datetime import datetime, UTC
sys.path.insert(0, {repo!r})
from core.eventlog import EventLog
now = datetime.fromisoformat({now!r})
result = EventLog({uri!r}, clock=lambda: now).append([{row!r}])
assert result.accepted == ["e1"], result
os.kill(os.getpid(), signal.SIGKILL)  # killed right after acknowledging: no clean shutdown
"""


def test_a_writer_killed_after_acknowledging_loses_nothing_and_a_restart_dedups(tmp_path):
    code = _KILLED_WRITER.format(repo=str(REPO), now=NOW.isoformat(), uri=str(tmp_path),
                                 row=_event(1))  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    restarted = _log(tmp_path)
    assert _stored_ids(restarted) == ["e1"]
    assert restarted.append([_event(1)]).duplicates == ["e1"]
    assert _stored_ids(restarted) == ["e1"]


def test_a_torn_index_line_is_cut_and_the_log_goes_on(tmp_path):
    log = _log(tmp_path)
    log.append([_event(1)])
    index = tmp_path / "tenant_id=acme" / INDEX_NAME
    with open(index, "ab") as fh:
        fh.write(b"e2\tdeadbe")  # a writer died mid-line, before acknowledging e2
    fresh = _log(tmp_path)
    assert fresh.append([_event(2), _event(1)]).accepted == ["e2"]
    assert index.read_bytes().count(b"\n") == 2 and not index.read_bytes().endswith(b"deadbe")
    assert _log(tmp_path).append([_event(2)]).duplicates == ["e2"]


def test_an_existing_log_without_an_index_is_indexed_from_its_files(tmp_path):
    log = _log(tmp_path)
    log.append([_event(1)])
    (tmp_path / "tenant_id=acme" / INDEX_NAME).unlink()  # a log written before the index
    result = _log(tmp_path).append([_event(1), _event(1, item_id="other"), _event(2)])
    assert result.duplicates == ["e1", "e1"] and result.accepted == ["e2"]  # content unknown


# ---- 4. durability and compaction -----------------------------------------------------------


def test_append_syncs_the_file_and_its_directories(tmp_path, monkeypatch):
    synced = []
    real = storage_module._fsync
    monkeypatch.setattr(storage_module, "_fsync",
                        lambda path, directory=False: (synced.append(path), real(path, directory)))  # fmt: skip
    log = _log(tmp_path)
    log.append([_event(1)])
    (part,) = log.files("acme")
    date_dir = part.rsplit("/", 1)[0]
    assert date_dir in synced  # the renamed entry
    assert any(p.rsplit("/", 1)[-1].startswith(".tmp-") for p in synced)  # content before rename
    assert str(tmp_path / "tenant_id=acme") in synced  # the new date directory's entry


def test_compaction_alongside_concurrent_appends_keeps_every_event_once(tmp_path):
    log = _log(tmp_path)
    for i in range(10):
        log.append([_event(i)])
    writer = _log(tmp_path)
    stop = threading.Event()
    written = []

    def keep_appending():
        i = 100
        while not stop.is_set() or i < 130:
            written.extend(writer.append([_event(i)]).accepted)
            i += 1

    thread = threading.Thread(target=keep_appending)
    thread.start()
    compactor = BackgroundCompactor(_log(tmp_path), min_files=2)
    for _ in range(3):
        compactor.run_once()
    stop.set()
    thread.join()
    compactor.run_once()
    assert compactor.errors == 0 and compactor.files_removed > 0
    expected = sorted([f"e{i}" for i in range(10)] + written)
    assert _stored_ids(log) == expected
    assert len(log.files("acme")) == 1


def test_reads_retry_when_a_compaction_removed_a_listed_file(tmp_path, monkeypatch):
    log = _log(tmp_path)
    log.append([_event(1)])
    real, calls = log.dataset, []

    def flaky(tenant=None):
        calls.append(tenant)
        if len(calls) == 1:
            raise FileNotFoundError("part-x.parquet")
        return real(tenant)

    monkeypatch.setattr(log, "dataset", flaky)
    assert log.read("acme").num_rows == 1 and len(calls) == 2


def test_background_compactor_thread_starts_and_stops(tmp_path):
    log = _log(tmp_path)
    for i in range(3):
        log.append([_event(i)])
    compactor = BackgroundCompactor(log, interval_s=0.01).start()
    done = threading.Event()
    while compactor.passes == 0:
        done.wait(0.01)
    compactor.stop()
    assert len(log.files("acme")) == 1 and _stored_ids(log) == ["e0", "e1", "e2"]


def test_object_store_appends_work_with_a_per_process_index():
    """pyarrow.fs object stores have no lock or append: the index is per process there (see
    core.event_ids), and a new instance still finds the ids in the log."""
    from pyarrow.fs import _MockFileSystem

    fs = _MockFileSystem()
    log = EventLog("bucket/events", filesystem=fs, clock=lambda: NOW)
    assert log.append([_event(1), _event(2, ts=1e20)]).accepted == ["e1"]
    assert log.append([_event(1)]).duplicates == ["e1"]
    other = EventLog("bucket/events", filesystem=fs, clock=lambda: NOW)
    assert other.append([_event(1), _event(3)]).duplicates == ["e1"]
    assert _stored_ids(other) == ["e1", "e3"]


def test_gateway_assigns_arrival_order_and_refuses_a_client_seq(tmp_path) -> None:
    """Events of the same second keep the order they arrived in (``seq`` assigned on receipt,
    strictly increasing); a client may not set it (it would reorder other clients' events)."""
    from datetime import UTC, datetime

    from core.eventlog import EventLog

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    log = EventLog(str(tmp_path / "events"), clock=lambda: now)
    same = "2026-12-01T11:59:00Z"
    rows = [{"event_id": f"e{i}", "tenant_id": "t", "user_id": "u", "item_id": item,
             "event_type": "click", "ts": same} for i, item in enumerate(["z", "b", "m"])]  # fmt: skip
    assert log.append(rows).accepted == ["e0", "e1", "e2"]
    later = log.append([{**rows[0], "event_id": "e3", "item_id": "a"}])
    assert later.accepted == ["e3"]
    read = log.read("t").to_pylist()
    assert [r["item_id"] for r in read] == ["z", "b", "m", "a"]  # arrival, not id order
    seqs = [r["seq"] for r in read]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    bad = log.append([{**rows[0], "event_id": "e4", "seq": 1}])
    assert bad.accepted == [] and bad.rejected[0].field == "seq"
    # A retry of an accepted event is a duplicate although its copy would arrive later.
    assert log.append([rows[1]]).duplicates == ["e1"]
