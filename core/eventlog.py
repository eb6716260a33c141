"""The event log: partitioned Parquet with :data:`core.schema.EVENT_SCHEMA`.

Layout under the events root (any ``pyarrow.fs`` URI)::

    tenant_id=<t>/date=<YYYY-MM-DD>/part-<uuid>.parquet

Invariants:

* Every file appears atomically: it is written under a hidden name (``.tmp-…``; readers,
  ``pyarrow.dataset`` and Ray Data ignore ``.``/``_`` prefixed files) and renamed into place,
  or put in one request on object stores. A reader never sees half a file.
* Every row is validated on its own (:func:`core.schema.normalize_event`, time bounds
  :class:`core.schema.EventBounds`, the tenant's catalogue and surfaces when given): a bad row
  is rejected with its field and reason, and never costs the rest of its batch.
* :meth:`EventLog.append` is idempotent by ``(tenant, event_id)`` across instances, processes
  and restarts, through the durable id index of :mod:`core.event_ids`: an id already stored
  is a *duplicate* (same content) or a *conflict* (different content), and is not written
  again. On object stores the index is per process; see :mod:`core.event_ids`.
* Accepted rows are durable when ``append`` returns: their file is committed and, on local
  disks, ``fsync``-ed with its directory; then their ids are in the index. ``append`` returns
  the stored rows themselves (:attr:`AppendResult.accepted_rows`), so a caller applies exactly
  what was stored.
* :meth:`EventLog.compact` merges each date partition into one file; it runs concurrently
  with appends (appends only ever add new files) and is safe to call from a background thread
  (:class:`core.event_compaction.BackgroundCompactor`).
* ``date`` is the UTC date of ``ts``. ``tenant_id`` is both a path partition and a column, so
  a file read alone is self-describing.

Length: the event log's write path (validation, idempotency, durability) and read path
share its file layout; the id index and compaction live in their own modules.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.event_ids import UNKNOWN_FINGERPRINT, EventIdIndex
from core.schema import (
    EVENT_COLUMNS,
    EVENT_SCHEMA,
    EVENT_TYPES,
    EventBounds,
    RowError,
    event_fingerprint,
    normalize_event,
    to_utc,
)
from core.storage import Storage

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PARTITIONING = ds.partitioning(
    pa.schema([("tenant_id", pa.string()), ("date", pa.string())]), flavor="hive"
)
_DATE_PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


@dataclass(frozen=True)
class Rejection:
    """A row that was not written: its index in the batch, its id if readable, and why."""

    index: int
    event_id: str | None
    field: str
    reason: str


@dataclass
class AppendResult:
    """Outcome of one :meth:`EventLog.append`; every input row is in exactly one of
    ``accepted``, ``duplicates``, ``conflicts``, ``rejected``.

    ``accepted_rows[i]`` is the normalised row stored for ``accepted[i]`` (EVENT_SCHEMA
    fields, ``ts`` an aware UTC datetime): apply these, never the request's rows matched by
    id. ``duplicates``: ids already stored (or earlier in the batch) with the same content — a
    retry, harmless. ``conflicts``: ids already stored (or earlier in the batch) with other
    content — not written; the client reused an id.
    """

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    accepted_rows: list[dict] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def check_events_table(table: pa.Table) -> pa.Table:
    """Return ``table`` as :data:`EVENT_SCHEMA` (columns reordered, types cast) or raise
    ``ValueError`` naming the first problem (missing/extra column, null in a required column,
    unknown event type, bad tenant id)."""
    if "seq" not in table.column_names:  # optional: a bulk source without an arrival order
        table = table.append_column("seq", pa.nulls(table.num_rows, pa.int64()))
    missing = [c for c in EVENT_COLUMNS if c not in table.column_names]
    extra = [c for c in table.column_names if c not in EVENT_COLUMNS]
    if missing or extra:
        raise ValueError(f"events table: missing columns {missing}, unknown columns {extra}")
    table = table.select(list(EVENT_COLUMNS))
    for f in EVENT_SCHEMA:
        if not f.nullable and table.column(f.name).null_count:
            raise ValueError(f"events table: column {f.name!r} has nulls but is required")
    try:
        table = table.cast(EVENT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"events table: cannot cast to EVENT_SCHEMA: {exc}") from None
    bad = pc.invert(pc.is_in(table.column("event_type"), pa.array(EVENT_TYPES)))
    if pc.any(bad).as_py():
        example = pc.filter(table.column("event_type"), bad)[0].as_py()
        raise ValueError(f"events table: unknown event_type {example!r}")
    for tenant in pc.unique(table.column("tenant_id")).to_pylist():
        if not _TENANT_RE.match(tenant):
            raise ValueError(f"events table: invalid tenant_id {tenant!r}")
    return table


class EventLog:
    """Append, read and compact the partitioned event log rooted at ``uri``.

    Thread-safe, and safe with other instances on the same storage. ``filesystem`` overrides
    what ``uri`` would give (see :class:`core.storage.Storage`). ``bounds``: the time window
    :meth:`append` accepts; ``clock``: returns "now" (an aware datetime) for that window.
    """

    def __init__(
        self,
        uri: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        bounds: EventBounds | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.store = Storage(uri, filesystem)
        self.uri = self.store.uri
        self.bounds = bounds or EventBounds()
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self.ids = EventIdIndex(self.store, self._stored_ids)
        self._last_seq = 0

    def _arrival(self) -> int:
        """The next arrival ``seq``: nanoseconds since the epoch, strictly increasing in this
        process (so events of one request keep their order even within a nanosecond tick).
        Called under ``self._lock``."""
        self._last_seq = max(time.time_ns(), self._last_seq + 1)
        return self._last_seq

    def __repr__(self) -> str:
        return f"EventLog({self.uri!r})"

    # ---- writing ----------------------------------------------------------------------------

    def append(
        self,
        rows: list[Any],
        *,
        tenant: str | None = None,
        items: Container[str] | None = None,
        surfaces: Container[str] | None = None,
        now: datetime | None = None,
    ) -> AppendResult:
        """Validate, deduplicate and durably write ``rows`` (dicts of EVENT_SCHEMA fields).

        Each row is judged alone: a malformed one is rejected with its field and reason and
        the others are still written. ``tenant``: rows of another tenant are rejected on
        ``tenant_id``. ``items`` (the tenant's catalogue, anything supporting ``in``): a row
        for an item not in it is rejected on ``item_id``. ``surfaces``: a row naming a surface
        not in it is rejected on ``surface`` (a row without a surface is fine). Unknown items
        and surfaces are rejected rather than stored: nothing could serve them, counting them
        would let any client push junk into trending, and a rejected row can be resent once
        the catalogue knows the item. ``now`` (default: the clock) anchors the time bounds.

        Never raises for what a row holds. A storage failure raises ``OSError``: nothing of
        that tenant's rows is acknowledged then (answer 503; a retry is safe).
        """
        now = now or self.clock()
        result = AppendResult()
        valid: list[tuple[dict, str]] = []
        for index, row in enumerate(rows):
            raw_id = row.get("event_id") if isinstance(row, dict) else None
            event_id = raw_id if isinstance(raw_id, str) and _reportable(raw_id) else None
            try:
                event = self._check_row(row, now, tenant, items, surfaces)
            except RowError as err:
                result.rejected.append(Rejection(index, event_id, err.field, err.message))
                continue
            valid.append((event, event_fingerprint(event)))

        by_tenant: dict[str, list[tuple[dict, str]]] = {}
        for event, fp in valid:
            by_tenant.setdefault(event["tenant_id"], []).append((event, fp))
        fresh_ids: set[int] = set()
        outcome: dict[int, str] = {}
        for t, group in by_tenant.items():
            with self._lock, self.ids.locked(t) as stored:
                fresh: dict[str, tuple[dict, str]] = {}
                for event, fp in group:
                    eid = event["event_id"]
                    known = fresh[eid][1] if eid in fresh else stored.get(eid)
                    if known is None:
                        fresh[eid] = (event, fp)
                        fresh_ids.add(id(event))
                    elif known in (fp, UNKNOWN_FINGERPRINT):
                        outcome[id(event)] = "duplicate"
                    else:
                        outcome[id(event)] = "conflict"
                if fresh:
                    events = [e for e, _ in fresh.values()]
                    for e in events:  # arrival order, for events that share a ts
                        e["seq"] = self._arrival()
                    self._write_groups(pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
                    self.ids.record(t, [(eid, fp) for eid, (_, fp) in fresh.items()])
        for event, _ in valid:  # report in input order
            if id(event) in fresh_ids:
                result.accepted.append(event["event_id"])
                result.accepted_rows.append(event)
            elif outcome[id(event)] == "duplicate":
                result.duplicates.append(event["event_id"])
            else:
                result.conflicts.append(event["event_id"])
        return result

    def _check_row(self, row: Any, now: datetime, tenant: str | None, items, surfaces) -> dict:
        event = normalize_event(row, now=now, bounds=self.bounds)
        if not _TENANT_RE.match(event["tenant_id"]):
            raise RowError("tenant_id", "use letters, digits, '_', '.', '-'")
        if tenant is not None and event["tenant_id"] != tenant:
            raise RowError("tenant_id", f"row is for tenant {event['tenant_id']!r}, not {tenant!r}")
        if items is not None and event["item_id"] not in items:
            raise RowError("item_id", "unknown item: not in the tenant's catalogue")
        if surfaces is not None and event["surface"] is not None and event["surface"] not in surfaces:
            raise RowError("surface", "unknown surface for this tenant")
        return event

    def write_table(self, table: pa.Table) -> list[str]:
        """Bulk-write an events table (generators, imports): schema-checked, not deduplicated
        and not time-bounded; its ids are added to the id index (as unfingerprinted).

        Writes one atomic file per (tenant, date) present in ``table``; returns their paths.
        """
        table = check_events_table(table)
        paths = []
        for t in pc.unique(table.column("tenant_id")).to_pylist():
            part = table.filter(pc.equal(table.column("tenant_id"), t))
            with self._lock, self.ids.locked(t):
                paths += self._write_groups(part)
                ids = part.column("event_id").to_pylist()
                self.ids.record(t, [(i, UNKNOWN_FINGERPRINT) for i in ids])
        return paths

    def _stored_ids(self, tenant: str) -> list[str]:
        return self.dataset(tenant).to_table(columns=["event_id"]).column("event_id").to_pylist()

    def _write_groups(self, table: pa.Table) -> list[str]:
        dates = pc.strftime(table.column("ts"), format="%Y-%m-%d")
        keys = pc.binary_join_element_wise(table.column("tenant_id"), dates, "/")
        # Sort once and slice, rather than one filter per (tenant, date): imports such as
        # MovieLens span thousands of dates.
        table = table.append_column("_key", keys).sort_by(
            [("_key", "ascending"), ("ts", "ascending")]
        )
        paths, offset = [], 0
        for entry in pc.value_counts(table.column("_key")).to_pylist():
            tenant, date = entry["values"].split("/")
            part = table.slice(offset, entry["counts"]).drop_columns(["_key"])
            offset += entry["counts"]
            name = f"part-{uuid.uuid4().hex}.parquet"
            path = self.store.path(f"tenant_id={tenant}", f"date={date}", name)
            self.commit_file(part, path)
            paths.append(path)
        return paths

    def commit_file(self, table: pa.Table, path: str) -> None:
        """Write ``table`` as the Parquet file ``path`` so that it appears whole, durably."""
        self.store.makedirs(path.rsplit("/", 1)[0])
        if not self.store.is_local:  # one PUT (or completed multipart upload) is atomic
            pq.write_table(table, path, filesystem=self.store.fs)
            return
        tmp = self.store.tmp_name(path)
        pq.write_table(table, tmp, filesystem=self.store.fs)
        self.store.commit(tmp, path)  # syncs the file, then the directory after the rename

    # ---- reading ----------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        """Tenants with a partition in the log."""
        infos = self.store.ls(self.store.root)
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
        return sorted(n.removeprefix("tenant_id=") for n in names if n.startswith("tenant_id="))

    def dataset(self, tenant: str | None = None) -> ds.Dataset:
        """A ``pyarrow.dataset`` over the log (one tenant, or all), with EVENT_SCHEMA columns
        plus the ``date`` partition column (a ``YYYY-MM-DD`` string)."""
        schema = EVENT_SCHEMA.append(pa.field("date", pa.string()))
        base, partitioning = self.store.root, _PARTITIONING
        if tenant is not None:
            base, partitioning = self.store.path(f"tenant_id={tenant}"), _DATE_PARTITIONING
        if self.store.fs.get_file_info(base).type != pafs.FileType.Directory:
            return ds.dataset(schema.empty_table())
        return ds.dataset(
            base,
            format="parquet",
            partitioning=partitioning,
            filesystem=self.store.fs,
            schema=schema,
        )

    def read(
        self,
        tenant: str,
        *,
        start: Any = None,
        end: Any = None,
        columns: list[str] | None = None,
        event_types: list[str] | None = None,
    ) -> pa.Table:
        """Events of ``tenant`` with ``start <= ts < end`` (either bound optional; datetime, ISO
        string or epoch seconds), optionally of some event types, sorted by ts, arrival ``seq`` (nulls first), then event_id."""
        if columns is not None:
            unknown = [c for c in columns if c not in EVENT_COLUMNS]
            if unknown:
                raise ValueError(
                    f"unknown event columns {unknown}; expected some of {list(EVENT_COLUMNS)}"
                )
        expr = _filter(start, end, event_types)
        for attempt in range(3):
            try:
                table = self.dataset(tenant).to_table(columns=list(EVENT_COLUMNS), filter=expr)
                break
            except FileNotFoundError:  # a compaction deleted a file listed a moment ago
                if attempt == 2:
                    raise
        table = table.sort_by(
            [("ts", "ascending"), ("seq", "ascending", "at_start"), ("event_id", "ascending")]
        )
        return table.select(columns) if columns is not None else table

    def files(self, tenant: str, *, start: Any = None, end: Any = None) -> list[str]:
        """Committed Parquet files of ``tenant``, pruned to the dates of ``[start, end)``."""
        lo = to_utc(start, "start").strftime("%Y-%m-%d") if start is not None else None
        hi = to_utc(end, "end").strftime("%Y-%m-%d") if end is not None else None
        out = []
        for info in self.store.ls(self.store.path(f"tenant_id={tenant}"), recursive=True):
            parts = info.path.rsplit("/", 2)
            if info.type != pafs.FileType.File or not parts[2].endswith(".parquet"):
                continue
            if parts[2][0] in "._" or not parts[1].startswith("date="):
                continue
            date = parts[1].removeprefix("date=")
            if (lo is None or date >= lo) and (hi is None or date <= hi):
                out.append(info.path)
        return sorted(out)

    def ray_dataset(self, tenant: str, **filters: Any):
        """The tenant's events as a ``ray.data.Dataset`` (EVENT_SCHEMA columns, unordered).

        ``filters``: ``start``, ``end``, ``event_types`` (as in :meth:`read`) and ``columns``;
        other keyword arguments go to ``ray.data.read_parquet``. Dates outside the range are
        pruned by path before Ray reads anything.
        """
        import ray.data  # core must not import Ray at module level

        start, end = filters.pop("start", None), filters.pop("end", None)
        expr = _filter(start, end, filters.pop("event_types", None))
        columns = filters.pop("columns", None) or list(EVENT_COLUMNS)
        paths = self.files(tenant, start=start, end=end)
        if not paths:
            return ray.data.from_arrow(EVENT_SCHEMA.empty_table().select(columns))
        dataset = ray.data.read_parquet(
            paths, filesystem=self.store.fs, partitioning=None, **filters
        )
        if expr is not None:
            dataset = dataset.map_batches(
                lambda batch: batch.filter(expr), batch_format="pyarrow", zero_copy_batch=True
            )
        return dataset.select_columns(columns)

    # ---- maintenance ------------------------------------------------------------------------

    def compact(self, tenant: str, *, min_files: int = 1) -> dict[str, int]:
        """Merge each date partition of ``tenant`` into one file, dropping duplicate event ids;
        safe with concurrent appends. See :func:`core.event_compaction.compact_tenant`."""
        from core.event_compaction import compact_tenant  # it imports this module

        return compact_tenant(self, tenant, min_files=min_files)


def _reportable(event_id: str) -> bool:
    """Whether a rejected row's id can be echoed back (UTF-8 encodable, bounded)."""
    if len(event_id) > 128:
        return False
    try:
        event_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate would make the JSON response unencodable
        return False
    return True


def _filter(start: Any, end: Any, event_types: list[str] | None) -> ds.Expression | None:
    expr = None
    if start is not None:
        expr = ds.field("ts") >= pa.scalar(to_utc(start, "start"), EVENT_SCHEMA.field("ts").type)
    if end is not None:
        bound = ds.field("ts") < pa.scalar(to_utc(end, "end"), EVENT_SCHEMA.field("ts").type)
        expr = bound if expr is None else expr & bound
    if event_types is not None:
        unknown = [t for t in event_types if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; expected some of {list(EVENT_TYPES)}")
        kinds = ds.field("event_type").isin(list(event_types))
        expr = kinds if expr is None else expr & kinds
    return expr
