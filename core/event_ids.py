"""The durable, shared index of accepted event ids: one per tenant, next to its partitions.

Layout under the events root::

    tenant_id=<t>/_event_ids.log     one ``<event_id>\\t<fingerprint>\\n`` line per stored event
    tenant_id=<t>/.ids.lock          the inter-process lock that serialises appends of <t>

(Readers skip ``_``/``.`` prefixed files, so neither is ever read as events.)

Why a log and not a per-process set: every ingress replica, and a replica started after a
restart, must agree on which ids are already stored. An append of tenant *t*, in any process
on any host sharing the filesystem, runs :meth:`EventIdIndex.locked` — an exclusive ``flock``
on ``.ids.lock`` — reads the index lines other writers added since it last looked (an offset
per tenant, so the cost is what is new, not the whole log), decides, writes its events, then
:meth:`EventIdIndex.record` appends their ids and ``fsync``-s before the lock is released.

Invariants:

* An id in the index is in a committed event file (the data file is written and synced
  first). A crash between the data file and the index line leaves the event stored but not
  indexed: the write was never acknowledged, a retry stores it a second time, and
  :meth:`core.eventlog.EventLog.compact` keeps one copy. No acknowledged event is lost.
* A torn last line (a writer killed mid-write) is cut off by the next writer under the lock.
* The fingerprint is :func:`core.schema.event_fingerprint`; ids found in the log before the
  index existed (bulk imports, older versions) are recorded with ``-``: a later row with such
  an id is a duplicate, never a conflict, since its content was not fingerprinted.

Object stores: ``pyarrow.fs`` offers neither ``flock`` nor append nor a conditional PUT, so
there the index is per process (loaded from the log, as before) and cross-replica duplicates
are removed by compaction. Sharing it there needs write-once marker objects with a conditional
create (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``) or the index on a shared
filesystem; neither is implemented.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from core.storage import Storage

INDEX_NAME = "_event_ids.log"
LOCK_NAME = ".ids.lock"
UNKNOWN_FINGERPRINT = "-"


class EventIdIndex:
    """Per-tenant map ``event_id -> fingerprint`` of every stored event, shared through storage.

    ``bootstrap(tenant)`` returns the ids already in the log, used once to create a tenant's
    index when it has events but no index yet. Thread-safe.
    """

    def __init__(self, store: Storage, bootstrap: Callable[[str], list[str]]):
        self.store = store
        self._bootstrap = bootstrap
        self._lock = threading.Lock()
        self._ids: dict[str, dict[str, str]] = {}
        self._offset: dict[str, int] = {}

    def _path(self, tenant: str) -> str:
        return self.store.path(f"tenant_id={tenant}", INDEX_NAME)

    @contextlib.contextmanager
    def locked(self, tenant: str) -> Iterator[dict[str, str]]:
        """Hold tenant ``tenant`` exclusively (threads and, locally, processes) and yield its
        up-to-date ``event_id -> fingerprint`` map. Call :meth:`record` inside the block for
        the events written there."""
        directory = self.store.path(f"tenant_id={tenant}")
        if self.store.is_local:
            self.store.makedirs(directory)  # durably: the lock would create it unsynced
        with self._lock, self.store.local_lock(directory, LOCK_NAME):
            yield self._catch_up(tenant)

    def record(self, tenant: str, entries: list[tuple[str, str]]) -> None:
        """Add ``(event_id, fingerprint)`` pairs; durable when it returns. Only inside
        :meth:`locked` for ``tenant``, after the events themselves are committed."""
        if not entries:
            return
        ids = self._ids[tenant]
        # A tab or newline would break the line format (possible only in bulk imports).
        entries = [(i, fp) for i, fp in entries if "\t" not in i and "\n" not in i]
        for event_id, fp in entries:
            if fp != UNKNOWN_FINGERPRINT or event_id not in ids:
                ids[event_id] = fp
        if not self.store.is_local or not entries:
            return
        path = self._path(tenant)
        data = "".join(f"{i}\t{fp}\n" for i, fp in entries).encode()
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._offset[tenant] += len(data)

    def _catch_up(self, tenant: str) -> dict[str, str]:
        if not self.store.is_local:
            if tenant not in self._ids:
                self._ids[tenant] = dict.fromkeys(self._bootstrap(tenant), UNKNOWN_FINGERPRINT)
            return self._ids[tenant]
        path = self._path(tenant)
        if not os.path.exists(path):
            self._create(tenant, path)
        size = os.path.getsize(path)
        offset = self._offset.get(tenant, 0)
        if tenant not in self._ids or size < offset:  # first look, or the index was replaced
            self._ids[tenant], offset = {}, 0
        if size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(size - offset)
            end = chunk.rfind(b"\n") + 1
            if end < len(chunk):  # a torn line: its writer died before acknowledging
                os.truncate(path, offset + end)
                self.store.sync_file(path)
            ids = self._ids[tenant]
            for line in chunk[:end].decode().splitlines():
                event_id, _, fp = line.partition("\t")
                if fp not in ("", UNKNOWN_FINGERPRINT) or event_id not in ids:
                    ids[event_id] = fp or UNKNOWN_FINGERPRINT
            offset += end
        self._offset[tenant] = offset
        return self._ids[tenant]

    def _create(self, tenant: str, path: str) -> None:
        """Write the index of a tenant that has none: the ids already in its log, if any."""
        existing = self._bootstrap(tenant)
        self.store.makedirs(path.rsplit("/", 1)[0])
        # An id with a tab or newline (possible only in bulk imports) cannot be appended again.
        ids = (i for i in dict.fromkeys(existing) if "\t" not in i and "\n" not in i)
        data = "".join(f"{i}\t{UNKNOWN_FINGERPRINT}\n" for i in ids)
        self.store.write_atomic(path, data.encode())
