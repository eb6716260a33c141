"""``training.evaluate.load_split`` reads an examples directory once while it is complete and
unchanged, and never answers from a stale read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.evaluate import load_split
from training.examples import DONE

pytestmark = pytest.mark.integration


def _write(ex_dir: Path, users: list[int]) -> None:
    ex_dir.mkdir(parents=True, exist_ok=True)
    n = len(users)
    pq.write_table(pa.table({
        "user_id": [f"u{u}" for u in users], "item": list(range(n)), "split": ["test"] * n,
        "ts": list(range(n)), "user": users, "history": [[1, 2]] * n, "surface": [0] * n,
        "hour": [3] * n,
    }), ex_dir / "part-0.parquet")  # fmt: skip


def test_load_split_rereads_what_changed(ray_connected, tmp_path: Path) -> None:
    ex_dir = tmp_path / "examples"
    _write(ex_dir, [1, 2, 3])
    assert load_split(ex_dir)["user"].tolist() == [1, 2, 3]
    _write(ex_dir, [4, 5])  # no completion marker: nothing is assumed immutable
    assert load_split(ex_dir)["user"].tolist() == [4, 5]

    (ex_dir / DONE).write_text("done")
    first = load_split(ex_dir)
    assert first["user"].tolist() == [4, 5] and not first["user"].flags.writeable
    assert load_split(ex_dir)["user"] is first["user"]  # complete and unchanged: one read

    _write(ex_dir, [6])  # rewritten and marked complete again: read again
    stamp = (ex_dir / DONE).stat().st_mtime_ns + 1_000_000
    os.utime(ex_dir / DONE, ns=(stamp, stamp))
    assert np.array_equal(load_split(ex_dir)["user"], [6])
