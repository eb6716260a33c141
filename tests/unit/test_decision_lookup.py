"""Decision lookups cost at most one small file read, and unknown ids are rate-limited per
tenant (issue 15: each unknown id scanned the tenant's whole decision log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.contracts import CandidateTable, DecisionRecord
from core.decision_log import DecisionLogWriter, new_request_id, request_id_ms
from core.rate_limit import TenantRateLimiter, retry_after_header


def _record(request_id: str, at: datetime, tenant: str = "acme") -> DecisionRecord:
    return DecisionRecord(
        request_id=request_id, tenant_id=tenant, user_id="u", surface="home", k=2, at=at,
        experiment={"id": "", "arm": "default"}, versions={}, sources=[], stage_latency_ms={},
        candidates=CandidateTable(item_id=[f"i{j}" for j in range(50)]), removals=[], slate=[],
    )  # fmt: skip


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _writer(tmp_path, **kw) -> DecisionLogWriter:
    return DecisionLogWriter(str(tmp_path), lru_size=1, batch_rows=40, flush_interval_s=0.05, **kw)


@pytest.fixture
def filled(tmp_path):
    """A log of 20 files (batches) over the last hour, and a cold reader (empty LRU)."""
    writer = _writer(tmp_path)
    now = datetime.now(UTC)
    ids = []
    for batch in range(20):
        for j in range(40):
            at = now - timedelta(minutes=60 - batch * 3, seconds=-j)
            rid = new_request_id(at)
            ids.append(rid)
            writer.submit(_record(rid, at))
        assert writer.flush()
    writer.close()
    return ids


def test_request_ids_carry_their_time_and_keep_the_uuid_hex_shape():
    at = datetime(2026, 12, 1, 4, 30, 15, 123000, tzinfo=UTC)
    rid = new_request_id(at)
    assert len(rid) == 32 and int(rid, 16) >= 0 and rid != new_request_id(at)
    assert request_id_ms(rid) == int(at.timestamp() * 1000)
    import uuid

    assert request_id_ms(uuid.uuid4().hex) is None and request_id_ms("nope") is None


def test_a_lookup_reads_at_most_one_file(tmp_path, filled):
    reader = _writer(tmp_path)
    for rid in (filled[0], filled[417], filled[-1]):
        before = reader.reads
        record = reader.get("acme", rid)
        assert record is not None and record.request_id == rid
        assert reader.reads - before == 1
    before = reader.reads
    assert reader.get("globex", filled[3]) is None  # another tenant's id: not found
    assert reader.get("acme", new_request_id()) is None  # unknown id with a time: <= 1 read
    assert reader.get("acme", new_request_id(datetime(2020, 1, 1, tzinfo=UTC))) is None
    assert reader.get("acme", "x" * 128) is None and reader.get("acme", "0" * 32) is None
    assert reader.reads - before <= 1
    reader.close()


def test_files_stay_small_however_large_the_batch(tmp_path):
    writer = _writer(tmp_path, max_file_bytes=4096)
    now = datetime.now(UTC)
    ids = [new_request_id(now + timedelta(milliseconds=i)) for i in range(30)]
    for rid in ids:
        writer.submit(_record(rid, now))
    writer.close()
    files = list(tmp_path.rglob("part-*.jsonl"))
    assert len(files) > 1 and all(f.stat().st_size <= 4096 + 2048 for f in files)
    reader = _writer(tmp_path)
    assert reader.get("acme", ids[17]).request_id == ids[17] and reader.reads == 1
    reader.close()


def test_unknown_id_lookups_are_rate_limited_per_tenant(tmp_path, filled):
    clock = _Clock()
    reader = _writer(tmp_path, miss_limiter=TenantRateLimiter(1.0, 3, clock=clock))
    for _ in range(3):
        assert reader.lookup("acme", new_request_id()).retry_after_s == 0
    refused = reader.lookup("acme", new_request_id())
    assert refused.record is None and refused.retry_after_s == pytest.approx(1.0)
    reads = reader.reads
    assert reader.lookup("acme", filled[5]).retry_after_s > 0  # no I/O while refused
    assert reader.reads == reads
    assert reader.lookup("globex", new_request_id()).retry_after_s == 0  # others unaffected
    clock.t += 1.0
    found = reader.lookup("acme", filled[5])
    assert found.record is not None and found.retry_after_s == 0  # hits cost nothing
    assert reader.lookup("acme", filled[6]).record is not None
    reader.close()


def test_rate_limiter_refills_and_caps_the_burst():
    clock = _Clock()
    limiter = TenantRateLimiter(2.0, 2, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    clock.t += 0.5
    assert limiter.acquire("a") == 0.0
    clock.t += 100
    assert [limiter.acquire("a") == 0.0 for _ in range(3)] == [True, True, False]
    assert limiter.refused == {"a": 2} and limiter.acquire("b") == 0.0
    assert retry_after_header(0.2) == "1" and retry_after_header(2.1) == "3"
    with pytest.raises(ValueError):
        TenantRateLimiter(0, 1)
