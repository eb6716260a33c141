"""Synthetic data is deterministic and schema-true; MovieLens imports follow the documented map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from core.catalogue import Catalogue
from core.eventlog import EventLog
from core.schema import EVENT_SCHEMA, EVENT_TYPES, ITEM_SCHEMA, USER_SCHEMA
from datagen.movielens import load_movielens
from datagen.synth import generate


def _table(root: Path, name: str, schema):
    return ds.dataset(root / name, format="parquet", partitioning="hive", schema=schema).to_table()


def _events(root: Path, tenant: str):
    return EventLog(str(root / "events")).read(tenant)


def test_synth_tiny_schema_and_invariants(tiny_data: Path) -> None:
    meta = json.loads((tiny_data / "synth.json").read_text())
    assert meta["tenants"] == ["acme", "globex"] and meta["preset"] == "tiny"
    items = _table(tiny_data, "catalogue", ITEM_SCHEMA)
    users = _table(tiny_data, "users", USER_SCHEMA)
    assert items.schema == ITEM_SCHEMA and users.schema == USER_SCHEMA
    for tenant in ("acme", "globex"):
        events = _events(tiny_data, tenant)
        assert events.schema == EVENT_SCHEMA
        assert 30_000 <= events.num_rows <= 60_000
        assert events.num_rows == meta["rows"][tenant]["events"]
        assert set(events.column("event_type").to_pylist()) <= set(EVENT_TYPES)
        assert len(set(events.column("event_id").to_pylist())) == events.num_rows
        impressions = events.filter(pc.equal(events["event_type"], "impression")).to_pylist()
        assert all(
            0 < r["propensity"] <= 1 and r["surface"] in ("home", "item_page") for r in impressions
        )

        cat = {
            r["item_id"]: r for r in items.filter(pc.equal(items["tenant_id"], tenant)).to_pylist()
        }
        mature = {
            r["user_id"]: r["max_maturity"] for r in users.to_pylist() if r["tenant_id"] == tenant
        }
        levels = ["general", "teen", "mature"]
        for r in impressions:  # items are shown only when eligible
            item = cat[r["item_id"]]
            assert item["created_at"] <= r["ts"]
            assert (
                item["available_from"] is None
                or item["available_from"] <= r["ts"] < item["available_until"]
            )
            assert levels.index(item["maturity"]) <= levels.index(mature[r["user_id"]])
    assert 12 <= len(set(items.column("category").to_pylist())) <= 40
    assert (tiny_data / "truth" / "tenant_id=acme" / "items.parquet").exists()


def test_synth_is_deterministic_for_a_seed(tiny_data: Path, tmp_path: Path) -> None:
    same = generate("tiny", str(tmp_path / "same"), seed=0, progress=False)
    other = generate("tiny", str(tmp_path / "other"), seed=1, progress=False)
    assert same.rows == json.loads((tiny_data / "synth.json").read_text())["rows"]
    for name, schema in (("catalogue", ITEM_SCHEMA), ("users", USER_SCHEMA)):
        assert _table(tmp_path / "same", name, schema).equals(_table(tiny_data, name, schema))
        assert not _table(tmp_path / "other", name, schema).equals(_table(tiny_data, name, schema))
    assert _events(tmp_path / "same", "acme").equals(_events(tiny_data, "acme"))
    assert not _events(tmp_path / "other", "acme").equals(_events(tiny_data, "acme"))
    assert other.dataset_version != same.dataset_version


def test_synth_refuses_to_write_twice(tiny_data: Path) -> None:
    with pytest.raises(FileExistsError, match="already has data"):
        generate("tiny", str(tiny_data), progress=False)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        generate("huge", str(tiny_data / "x"), progress=False)  # type: ignore[arg-type]


# Three users, four movies; user 1 rates movie 10 with 5 stars (a like) and movie 20 with 3.
RATINGS = [
    (1, 10, 5, 1_000_000_000),
    (1, 20, 3, 1_000_000_100),
    (2, 10, 4, 1_000_086_400),
    (3, 30, 2, 1_000_000_050),
]
MOVIES = [(10, "Heat (1995)", ["Action", "Crime"]), (20, "Babe (1995)", ["Children's", "Comedy"]),
          (30, "Nixon (1995)", ["Drama"]), (40, "Unrated (1999)", [])]  # fmt: skip


def _write_layout(root: Path, layout: str) -> Path:
    root.mkdir(parents=True)
    if layout == "ml-100k":
        from datagen.movielens import ML100K_GENRES

        (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
        lines = []
        for mid, title, genres in MOVIES:
            flags = ["1" if g in genres else "0" for g in ML100K_GENRES]
            if not genres:
                flags[0] = "1"  # "unknown"
            lines.append("|".join([str(mid), title, "01-Jan-1995", "", "http://x", *flags]))
        (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    elif layout == "ml-1m":
        (root / "ratings.dat").write_text(
            "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS)
        )
        movies = "".join(f"{m}::{t}::{'|'.join(g) or '(no genres listed)'}\n" for m, t, g in MOVIES)
        (root / "movies.dat").write_bytes(movies.encode("latin-1"))
    else:
        (root / "ratings.csv").write_text(
            "userId,movieId,rating,timestamp\n"
            + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in RATINGS)
        )
        (root / "movies.csv").write_text(
            "movieId,title,genres\n"
            + "".join(f'{m},"{t}",{"|".join(g) or "(no genres listed)"}\n' for m, t, g in MOVIES)
        )
    return root


@pytest.mark.parametrize("layout", ["ml-100k", "ml-1m", "csv"])
def test_movielens_layouts_map_to_the_platform_schema(tmp_path: Path, layout: str) -> None:
    src = _write_layout(tmp_path / "src", layout)
    summary = load_movielens(str(src), str(tmp_path / "out"), tenant="ml")
    assert summary.source == f"movielens:{layout}"
    assert summary.rows["ml"] == {"items": 4, "users": 3, "events": 6,
                                  "event_types": {"like": 2, "rating": 4}}  # fmt: skip

    events = _events(tmp_path / "out", "ml")
    assert events.schema == EVENT_SCHEMA
    ratings = {
        (r["user_id"], r["item_id"]): r["value"]
        for r in events.to_pylist()
        if r["event_type"] == "rating"
    }
    assert ratings == {("1", "10"): 5.0, ("1", "20"): 3.0, ("2", "10"): 4.0, ("3", "30"): 2.0}
    likes = {(r["user_id"], r["item_id"]) for r in events.to_pylist() if r["event_type"] == "like"}
    assert likes == {("1", "10"), ("2", "10")}  # ratings >= 4

    items = {
        r["item_id"]: r for r in _table(tmp_path / "out", "catalogue", ITEM_SCHEMA).to_pylist()
    }
    assert items["10"]["category"] == "Action" and items["10"]["tags"] == ["Action", "Crime"]
    assert items["20"]["category"] == "Children's" and items["20"]["title"] == "Babe (1995)"
    assert items["40"]["category"] == "unknown" and items["40"]["tags"] == []
    assert items["10"]["created_at"].timestamp() == 1_000_000_000  # first rating
    assert {r["maturity"] for r in items.values()} == {"general"}
    users = {r["user_id"]: r for r in _table(tmp_path / "out", "users", USER_SCHEMA).to_pylist()}
    assert users["2"]["created_at"].timestamp() == 1_000_086_400
    assert len(EventLog(str(tmp_path / "out" / "events")).files("ml")) == 2  # two UTC dates


def test_movielens_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens(str(tmp_path / "nope"), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a MovieLens dir"):
        load_movielens(str(tmp_path / "empty"), str(tmp_path / "out"))


def test_movielens_same_second_ratings_keep_the_files_order(tmp_path: Path) -> None:
    """Ratings of one second keep the file's order (``seq``), not an id order: the file says
    user 1 rated movie 30 and then movie 20 in the same second, so 20 is the later one, and
    every replay (EventLog.read, the training split) must see it last. Sorting by item id
    (protocol v4 and before) put "30" last."""
    root = tmp_path / "src"
    root.mkdir()
    rows = [(1, 10, 5, 1_000_000_000), (1, 30, 2, 1_000_000_100), (1, 20, 3, 1_000_000_100)]
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in rows)
    )
    load_movielens(str(root), str(tmp_path / "out"), tenant="ml")
    log = EventLog(str(tmp_path / "out" / "events"))
    ratings = [r for r in log.read("ml").to_pylist() if r["event_type"] == "rating"]
    assert [r["item_id"] for r in ratings] == ["10", "30", "20"]
    assert [r["seq"] for r in ratings] == [0, 1, 2]

    from training.datasets import prepare_events, replay_user

    prepared = prepare_events(log.read("ml")).to_pydict()
    group = {k: np.array(v, dtype=object) for k, v in prepared.items()}
    group["ts"] = np.array(prepared["ts"], dtype=np.float64)
    out = replay_user(group, Catalogue.from_table(_table(tmp_path / "out", "catalogue", ITEM_SCHEMA), "ml"),
                      ranker=False)  # fmt: skip
    split = dict(zip(out["item_id"], out["split"], strict=True))
    assert split == {"10": "train", "30": "validation", "20": "test"}
