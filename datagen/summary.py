"""What a data generator or importer wrote, and the shared output layout.

Every generator writes, under its output root (a local path or ``pyarrow.fs`` URI)::

    catalogue/tenant_id=<t>/part-00000.parquet   ITEM_SCHEMA
    users/tenant_id=<t>/part-00000.parquet       USER_SCHEMA
    events/tenant_id=<t>/date=<d>/part-*.parquet EVENT_SCHEMA (through core.eventlog.EventLog)
    <name>.json                                  the summary below, as JSON
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.storage import Storage


@dataclass(kw_only=True)
class DatasetSummary:
    """Tenants, rows per table per tenant, the UTC event time range and the dataset version."""

    source: str
    out: str
    tenants: list[str]
    rows: dict[str, dict[str, int]]
    """tenant -> {"items": n, "users": n, "events": n, "event_types": {type: n}}"""
    start: datetime | None
    end: datetime | None
    dataset_version: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat() if self.start else None
        d["end"] = self.end.isoformat() if self.end else None
        return d

    def write(self, name: str) -> str:
        """Write the summary as ``<out>/<name>`` and return its path."""
        store = Storage(self.out)
        path = store.path(name)
        store.write_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True).encode())
        return path


@dataclass(kw_only=True)
class SynthSummary(DatasetSummary):
    preset: str
    seed: int


def dataset_version(*parts: Any) -> str:
    """A short stable hash of whatever identifies a dataset's content."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_empty_output(out: str) -> Storage:
    """The output root as Storage; FileExistsError if it already holds a dataset (writing
    into it again would duplicate every event)."""
    store = Storage(out)
    for table in ("catalogue", "users", "events"):
        if store.ls(store.path(table)):
            raise FileExistsError(
                f"{store.path(table)} already has data; choose a new output directory or delete it"
            )
    return store


def write_parquet(store: Storage, parts: tuple[str, ...], table: pa.Table) -> str:
    """Write ``table`` to ``<out>/<parts...>`` atomically; returns the path."""
    path = store.path(*parts)
    store.makedirs(path.rsplit("/", 1)[0])
    tmp = store.tmp_name(path) if store.is_local else path
    pq.write_table(table, tmp, filesystem=store.fs)
    if tmp != path:
        store.commit(tmp, path)
    return path
