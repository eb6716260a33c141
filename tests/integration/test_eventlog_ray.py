"""Ray Data reads back exactly what the event log wrote. (`recsys up/status/down` on a real
local cluster: tests/integration/test_cluster_auth.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from core.eventlog import EventLog
from core.schema import EVENT_COLUMNS

pytestmark = pytest.mark.integration


def _collect(dataset) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def _sorted(table: pa.Table) -> pa.Table:
    return table.select(list(EVENT_COLUMNS)).sort_by([("event_id", "ascending")])


def test_synth_events_read_back_with_ray_data(ray_connected, tiny_data: Path) -> None:
    log = EventLog(str(tiny_data / "events"))
    for tenant in ("acme", "globex"):
        written = log.read(tenant)
        # Read once (one Ray Data execution per tenant, not one for the count and one for rows).
        ds = log.ray_dataset(tenant).materialize()
        assert ds.count() == written.num_rows
        assert _sorted(_collect(ds)).equals(_sorted(written))


def test_ray_dataset_filters_match_the_local_reader(ray_connected, tiny_data: Path) -> None:
    log = EventLog(str(tiny_data / "events"))
    window = {
        "start": datetime(2025, 1, 8, tzinfo=UTC),
        "end": datetime(2025, 1, 15, 12, tzinfo=UTC),
    }
    expected = log.read("acme", event_types=["click", "like"], **window)
    ds = log.ray_dataset(
        "acme", event_types=["click", "like"], columns=["event_id", "ts"], **window
    )
    got = _collect(ds).sort_by([("event_id", "ascending")])
    assert got.column_names == ["event_id", "ts"]
    want = expected.select(["event_id", "ts"]).sort_by([("event_id", "ascending")])
    assert got.num_rows > 0 and got.to_pylist() == want.to_pylist()
    assert log.ray_dataset("nobody").count() == 0


def test_movielens_events_read_back_with_ray_data(ray_connected, tmp_path: Path) -> None:
    from datagen.movielens import load_movielens

    src = tmp_path / "ml"
    src.mkdir()
    rows = [
        (u, i, 1 + (u * i) % 5, 1_000_000_000 + 3_600 * (u * 7 + i))
        for u in range(1, 30)
        for i in range(1, 12)
    ]
    (src / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    )
    (src / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},M{i},Drama|War\n" for i in range(1, 12))
    )
    summary = load_movielens(str(src), str(tmp_path / "out"), tenant="ml")
    log = EventLog(str(tmp_path / "out" / "events"))
    written = log.read("ml")
    assert (
        written.num_rows
        == summary.rows["ml"]["events"]
        == len(rows) + sum(r >= 4 for _, _, r, _ in rows)
    )
    assert _sorted(_collect(log.ray_dataset("ml"))).equals(_sorted(written))
