"""Background compaction of the event log, so that one file per ``append`` does not last.

Each online ``append`` writes one file per (tenant, date) it touches. A
:class:`BackgroundCompactor` merges every tenant's partitions that have at least
``min_files`` files every ``interval_s`` (:meth:`core.eventlog.EventLog.compact`, which is
safe with concurrent appends from any process). Run one per event-log writer process (the
ingress) or one for the whole cluster: compactions of a tenant are serialised by a lock on
local storage; on object stores run exactly one, since two could merge the same files (no
event is lost then, but duplicates stay until the next pass).

The current date is rewritten at most once per interval, so a day's partition costs
``O(events of the day × passes)`` bytes written; pick ``interval_s`` accordingly (minutes).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.schema import EVENT_SCHEMA

# ``log`` is a :class:`core.eventlog.EventLog` (not imported: it imports this module).

logger = logging.getLogger(__name__)


def compact_tenant(log: Any, tenant: str, *, min_files: int = 1) -> dict[str, int]:
    """Merge each date partition of ``tenant`` into one file, dropping duplicate event ids.

    Partitions with fewer than ``min_files`` files are left alone (``min_files=2`` skips
    reading partitions that are already compact; the default also removes duplicates from
    single-file partitions). Safe with concurrent appends, in this or other processes:
    files are immutable, appends only add new ones, and only the files listed at the start
    are merged and deleted. Compactions of one tenant are serialised by their own lock, so
    appends never wait for one. The merged file is committed (and synced) before the old
    files are deleted, so a crash never loses an event; at worst it leaves duplicates that
    the next ``compact`` removes. A reader that listed the old files just before they were
    deleted can fail and must retry. Returns counts: ``files_before``, ``files_after``,
    ``rows``, ``duplicates_removed``.
    """
    stats = {"files_before": 0, "files_after": 0, "rows": 0, "duplicates_removed": 0}
    by_date: dict[str, list[str]] = {}
    tenant_dir = log.store.path(f"tenant_id={tenant}")
    with log.store.local_lock(tenant_dir, ".compact.lock"):
        for path in log.files(tenant):
            by_date.setdefault(path.rsplit("/", 2)[1], []).append(path)
        for date_dir, paths in sorted(by_date.items()):
            stats["files_before"] += len(paths)
            stats["files_after"] += 1 if len(paths) >= min_files else len(paths)
            if len(paths) < min_files:
                continue
            tables = [
                pq.read_table(p, filesystem=log.store.fs, schema=EVENT_SCHEMA) for p in paths
            ]
            merged = pa.concat_tables(tables)
            unique = _dedup(merged)
            stats["rows"] += unique.num_rows
            stats["duplicates_removed"] += merged.num_rows - unique.num_rows
            if len(paths) == 1 and unique.num_rows == merged.num_rows:
                continue
            out = log.store.path(
                f"tenant_id={tenant}", date_dir, f"part-{uuid.uuid4().hex}.parquet"
            )
            log.commit_file(
                unique.sort_by([("ts", "ascending"), ("event_id", "ascending")]), out
            )
            for p in paths:
                log.store.fs.delete_file(p)
            log.store.sync_dir(out.rsplit("/", 1)[0])
    return stats


def _dedup(table: pa.Table) -> pa.Table:
    """Keep one row (the first) per event_id; row order is not preserved."""
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    firsts = indexed.group_by("event_id", use_threads=False).aggregate([("_row", "min")])
    return table.take(firsts.column("_row_min"))


class BackgroundCompactor:
    """A daemon thread that compacts ``log`` every ``interval_s`` until :meth:`stop`.

    ``run_once`` is the unit of work (also usable from a cron job or a Ray task); it never
    raises: a failed tenant is logged, counted in ``errors`` and retried next pass.
    """

    def __init__(self, log: Any, *, interval_s: float = 300.0, min_files: int = 2):
        self.log = log
        self.interval_s = interval_s
        self.min_files = min_files
        self.passes = 0
        self.errors = 0
        self.files_removed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, dict[str, int]]:
        """Compact every tenant once; returns per-tenant stats (failed tenants left out)."""
        out = {}
        for tenant in self.log.tenants():
            try:
                stats = self.log.compact(tenant, min_files=self.min_files)
            except Exception:  # storage hiccup: next pass retries; appends are unaffected
                logger.exception("event compaction of tenant %s failed", tenant)
                self.errors += 1
                continue
            self.files_removed += stats["files_before"] - stats["files_after"]
            out[tenant] = stats
        self.passes += 1
        return out

    def start(self) -> BackgroundCompactor:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="event-compaction", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()
