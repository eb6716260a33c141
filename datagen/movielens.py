"""Import a GroupLens MovieLens dataset into the platform's tables (one tenant).

Layouts, detected by which file exists in ``path`` (or in its only matching subdirectory):

=====================  ==================================  ==================================
layout                 ratings                             movies
=====================  ==================================  ==================================
``ml-100k``            ``u.data``: user\\titem\\trating\\tts  ``u.item``: ``|``-separated, latin-1,
                                                           id|title|date|video|url|19 genre flags
``ml-1m`` (``ml-10m``)  ``ratings.dat``: ``::``, latin-1     ``movies.dat``: id::title::A|B
``csv`` (ml-20m, ml-25m,  ``ratings.csv`` with header           ``movies.csv`` with header,
ml-latest(-small))     userId,movieId,rating,timestamp     movieId,title,genres (``|``)
=====================  ==================================  ==================================

Mapping (all ids become strings; ``tenant`` defaults to ``movielens``):

* every rating → one ``rating`` event, ``value`` = stars, ``ts`` = rating time; a rating of
  4 or more also → one ``like`` event (``value`` 1.0, same time). Event ids are
  ``<user>-<item>-<ts>-rating`` / ``-like``. ``surface``, ``request_id``, ``position`` and
  ``propensity`` are null (MovieLens has no logged impressions). ``seq`` is the rating's row
  in the file (its ``like`` shares it), so ratings of the same second keep the file's order.
* items: ``category`` = the first genre (``unknown`` when there is none, e.g. ``(no genres
  listed)``), ``tags`` = all genres, ``title`` from the movies file, ``created_at`` = the
  item's first rating (the dataset's first rating for never-rated movies), no availability
  window, ``maturity`` = ``general``. Rated movies missing from the movies file get category
  ``unknown`` and no title.
* users: ``created_at`` = first rating, ``max_maturity`` = ``mature`` (no restriction).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.eventlog import EventLog
from core.schema import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA
from datagen.summary import DatasetSummary, check_empty_output, dataset_version, write_parquet

ML100K_GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()
DOWNLOADS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small", "ml-latest")
_MARKERS = {"u.data": "ml-100k", "ratings.dat": "ml-1m", "ratings.csv": "csv"}
_CHUNK_ROWS = 2_000_000
TS = EVENT_SCHEMA.field("ts").type


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """(layout, directory) for a MovieLens directory, or FileNotFoundError naming what's missing."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"MovieLens directory {root} does not exist")
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for marker, layout in _MARKERS.items():
            if (candidate / marker).is_file():
                return layout, candidate
    raise FileNotFoundError(f"{root}: no u.data, ratings.dat or ratings.csv (not a MovieLens dir)")


def _read_ratings(layout: str, d: Path) -> pa.Table:
    """Columns user, item (strings), rating (float64), ts (int64 epoch seconds)."""
    names = ["user", "item", "rating", "ts"]
    types = {"user": pa.string(), "item": pa.string(), "rating": pa.float64(), "ts": pa.int64()}
    convert = pacsv.ConvertOptions(column_types=types)
    if layout == "ml-100k":
        read = pacsv.ReadOptions(column_names=names)
        return pacsv.read_csv(d / "u.data", read, pacsv.ParseOptions(delimiter="\t"), convert)
    if layout == "ml-1m":
        data = (d / "ratings.dat").read_bytes().replace(b"::", b"\t")
        read = pacsv.ReadOptions(column_names=names)
        return pacsv.read_csv(io.BytesIO(data), read, pacsv.ParseOptions(delimiter="\t"), convert)
    read = pacsv.ReadOptions(column_names=names, skip_rows=1)
    return pacsv.read_csv(d / "ratings.csv", read, convert_options=convert)


def _read_movies(layout: str, d: Path) -> dict[str, tuple[str, list[str]]]:
    """item id -> (title, genres)."""
    movies: dict[str, tuple[str, list[str]]] = {}
    if layout == "ml-100k":
        path = d / "u.item"
        if not path.exists():
            return movies
        for line in path.read_text(encoding="latin-1").splitlines():
            f = line.split("|")
            if len(f) >= 24:
                genres = [g for g, flag in zip(ML100K_GENRES, f[5:24], strict=True) if flag == "1"]
                movies[f[0]] = (f[1], [g for g in genres if g != "unknown"])
    elif layout == "ml-1m":
        path = d / "movies.dat"
        if not path.exists():
            return movies
        for line in path.read_text(encoding="latin-1").splitlines():
            f = line.split("::")
            if len(f) == 3:
                movies[f[0]] = (f[1], _genres(f[2]))
    elif (d / "movies.csv").exists():
        table = pacsv.read_csv(d / "movies.csv", convert_options=pacsv.ConvertOptions(
            column_types={"movieId": pa.string(), "title": pa.string(), "genres": pa.string()}
        ))  # fmt: skip
        for mid, title, genres in zip(
            *(table[c].to_pylist() for c in ("movieId", "title", "genres")), strict=True
        ):
            movies[mid] = (title, _genres(genres or ""))
    return movies


def _genres(field: str) -> list[str]:
    return [g for g in field.split("|") if g and g != "(no genres listed)"]


def load_movielens(path: str, out: str, tenant: str = "movielens") -> DatasetSummary:
    """Convert the MovieLens dataset in ``path`` into ``out`` (see the module docstring)."""
    layout, d = detect_layout(path)
    store = check_empty_output(out)
    ratings = _read_ratings(layout, d)
    if ratings.num_rows == 0:
        raise ValueError(f"{d}: no ratings")
    movies = _read_movies(layout, d)
    # Time order; ratings of the same second keep the file's order (``seq`` = the row in the
    # file), never an id order, which would bias which of them a leave-last-out split holds out.
    ratings = ratings.append_column("seq", pa.array(np.arange(ratings.num_rows, dtype=np.int64)))
    ratings = ratings.sort_by([("ts", "ascending"), ("seq", "ascending")])
    ts_us = pc.multiply(ratings["ts"], 1_000_000).cast(pa.int64())
    first_ts = int(pc.min(ts_us).as_py())

    def first_seen(key: str) -> tuple[list[str], list[int]]:
        g = pa.table({"k": ratings[key], "t": ts_us}).group_by("k").aggregate([("t", "min")])
        return g["k"].to_pylist(), g["t_min"].to_pylist()

    item_ids, item_first = first_seen("item")
    first_by_item = dict(zip(item_ids, item_first, strict=True))
    all_items = sorted(set(first_by_item) | set(movies), key=lambda x: (len(x), x))
    genres = [movies.get(i, (None, []))[1] for i in all_items]
    items = pa.Table.from_pydict(
        {
            "tenant_id": [tenant] * len(all_items),
            "item_id": all_items,
            "title": [movies.get(i, (None, []))[0] for i in all_items],
            "category": [g[0] if g else "unknown" for g in genres],
            "tags": genres,
            "created_at": pa.array([first_by_item.get(i, first_ts) for i in all_items]).cast(TS),
            "available_from": pa.nulls(len(all_items), TS),
            "available_until": pa.nulls(len(all_items), TS),
            "maturity": ["general"] * len(all_items),
        },
        schema=ITEM_SCHEMA,
    )
    user_ids, user_first = first_seen("user")
    order = sorted(range(len(user_ids)), key=lambda k: (len(user_ids[k]), user_ids[k]))
    users = pa.Table.from_pydict(
        {
            "tenant_id": [tenant] * len(user_ids),
            "user_id": [user_ids[k] for k in order],
            "created_at": pa.array([user_first[k] for k in order]).cast(TS),
            "max_maturity": ["mature"] * len(user_ids),
        },
        schema=USER_SCHEMA,
    )
    write_parquet(store, ("catalogue", f"tenant_id={tenant}", "part-00000.parquet"), items)
    write_parquet(store, ("users", f"tenant_id={tenant}", "part-00000.parquet"), users)

    log = EventLog(store.path("events"))
    n_likes = 0
    for lo in range(0, ratings.num_rows, _CHUNK_ROWS):
        chunk = ratings.slice(lo, _CHUNK_ROWS)
        events = _events(chunk, ts_us.slice(lo, _CHUNK_ROWS), tenant)
        n_likes += events.num_rows - chunk.num_rows
        log.write_table(events)

    files = [
        d / n
        for n in ("u.data", "u.item", "ratings.dat", "movies.dat", "ratings.csv", "movies.csv")
    ]
    digests = [_sha256(f) for f in files if f.exists()]
    last_ts = int(pc.max(ts_us).as_py())
    summary = DatasetSummary(
        source=f"movielens:{layout}",
        out=store.uri,
        tenants=[tenant],
        rows={
            tenant: {
                "items": items.num_rows,
                "users": users.num_rows,
                "events": ratings.num_rows + n_likes,
                "event_types": {"like": n_likes, "rating": ratings.num_rows},
            }
        },  # fmt: skip
        start=pa.scalar(first_ts, TS).as_py(),
        end=pa.scalar(last_ts, TS).as_py(),
        dataset_version=f"movielens-{layout}-" + dataset_version(layout, tenant, digests),
        params={"path": str(d), "layout": layout},
    )
    summary.write("movielens.json")
    return summary


def _events(chunk: pa.Table, ts_us: pa.Array, tenant: str) -> pa.Table:
    base = pc.binary_join_element_wise(
        chunk["user"], chunk["item"], chunk["ts"].cast(pa.string()), "-"
    )

    def table(event_type: str, mask: np.ndarray | None) -> pa.Table:
        rows = chunk if mask is None else chunk.filter(mask)
        ids = base if mask is None else base.filter(mask)
        ts = ts_us if mask is None else ts_us.filter(mask)
        m = rows.num_rows
        value = rows["rating"] if event_type == "rating" else pa.array(np.ones(m))
        return pa.Table.from_arrays(
            [
                pc.binary_join_element_wise(ids, event_type, "-"),
                pa.array([tenant] * m, pa.string()),
                rows["user"],
                rows["item"],
                pa.array([event_type] * m, pa.string()),
                value,
                ts.cast(TS),
                pa.nulls(m, pa.string()),
                pa.nulls(m, pa.string()),
                pa.nulls(m, pa.int32()),
                pa.nulls(m, pa.string()),
                pa.nulls(m, pa.float64()),
                rows["seq"],
            ],
            schema=EVENT_SCHEMA,
        )

    return pa.concat_tables(
        [table("rating", None), table("like", pc.greater_equal(chunk["rating"], 4.0))]
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_movielens(name: str, dest: str | Path) -> Path:
    """Download and unpack ``https://files.grouplens.org/datasets/movielens/<name>.zip`` into
    ``dest``; returns the unpacked directory. Only called on an explicit ``--download``."""
    if name not in DOWNLOADS:
        raise ValueError(
            f"unknown MovieLens dataset {name!r}; expected one of {', '.join(DOWNLOADS)}"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{name}.zip"
    if not archive.exists():
        url = f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        tmp = archive.with_suffix(".zip.part")
        with urllib.request.urlopen(url, timeout=60) as reply, open(tmp, "wb") as f:
            shutil.copyfileobj(reply, f)
        tmp.rename(archive)
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
        top = {Path(n).parts[0] for n in z.namelist() if n.strip("/")}
    unpacked = [dest / t for t in sorted(top) if (dest / t).is_dir()]
    return unpacked[0] if len(unpacked) == 1 else dest
