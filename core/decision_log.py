"""The decision log: every served :class:`core.contracts.DecisionRecord`, written asynchronously.

Layout under the decisions root (any ``pyarrow.fs`` URI)::

    tenant_id=<t>/date=<YYYY-MM-DD>/part-<time>-<uuid>.jsonl     one record per line

Invariants:

* :meth:`DecisionLogWriter.submit` never blocks and never raises: a record goes into a
  bounded queue or, when the queue is full, is dropped and counted (``dropped``). Serving
  latency does not depend on the disk.
* One background thread drains the queue in batches and writes each (tenant, date) group as
  one file that appears atomically (hidden temp name, then rename; one PUT on object stores).
* :meth:`DecisionLogWriter.get` is tenant-scoped: it answers from a bounded in-memory LRU of
  recent records, then from the tenant's own partitions (newest first, a bounded number of
  days back). Another tenant's request id is simply not found.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from core.contracts import DecisionRecord
from core.storage import Storage

logger = logging.getLogger(__name__)


class DecisionLogWriter:
    """Bounded, asynchronous decision-log writer with a recent-records LRU.

    ``queue_size`` bounds records waiting for the disk; ``lru_size`` bounds records kept in
    memory for :meth:`get`; ``flush_interval_s`` is the longest a queued record waits before
    its batch is written; ``lookback_days`` bounds how far :meth:`get` scans the log.
    """

    def __init__(
        self,
        uri: str,
        *,
        queue_size: int = 10_000,
        lru_size: int = 20_000,
        batch_rows: int = 1000,
        flush_interval_s: float = 0.5,
        lookback_days: int = 7,
    ):
        self.store = Storage(uri)
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.lookback_days = lookback_days
        # Queued and remembered records are kept as (tenant, date, JSON line): strings are not
        # tracked by the garbage collector, while a record is hundreds of nested objects.
        self._queue: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=queue_size)
        self._recent: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lru_size = lru_size
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # submitted, not yet written (or failed)
        self.submitted = 0
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    # ---- producer side ----------------------------------------------------------------------

    def submit(self, record: DecisionRecord, raw: str | bytes | None = None) -> bool:
        """Queue ``record`` for writing and remember it; False if it was dropped (queue full).
        ``raw``: the record's JSON (``model_dump_json``) when the caller already has it."""
        if raw is None:
            raw = record.model_dump_json()
        return self.submit_raw(record.tenant_id, record.request_id, record.at, raw)

    def submit_raw(self, tenant_id: str, request_id: str, at: datetime, raw: str | bytes) -> bool:
        """:meth:`submit` for a record already serialised (and validated) by its producer:
        ``raw`` is its ``model_dump_json``; it is stored as is, never parsed here."""
        if isinstance(raw, bytes):
            raw = raw.decode()
        date = at.astimezone(UTC).strftime("%Y-%m-%d")
        with self._lock:
            self._remember((tenant_id, request_id), raw)
            try:
                self._queue.put_nowait((tenant_id, date, raw))
            except queue.Full:
                self.dropped += 1
                return False
            self.submitted += 1
            self._pending += 1
        return True

    def _remember(self, key: tuple[str, str], raw: str) -> None:
        self._recent[key] = raw
        self._recent.move_to_end(key)
        while len(self._recent) > self._lru_size:
            self._recent.popitem(last=False)

    def get(self, tenant_id: str, request_id: str) -> DecisionRecord | None:
        """The tenant's record for ``request_id`` (memory, then log), or None."""
        with self._lock:
            raw = self._recent.get((tenant_id, request_id))
        if raw is not None:
            return DecisionRecord.model_validate_json(raw)
        return self._scan(tenant_id, request_id)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted record is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)

    # ---- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.flush_interval_s
            while len(batch) < self.batch_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[tuple[str, str, str]]) -> None:
        groups: dict[tuple[str, str], list[str]] = {}
        for tenant, date, raw in batch:
            groups.setdefault((tenant, date), []).append(raw)
        written = 0
        for (tenant, date), lines in groups.items():
            name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
            path = self.store.path(f"tenant_id={tenant}", f"date={date}", name)
            try:
                self.store.write_atomic(path, ("\n".join(lines) + "\n").encode())
                written += len(lines)
            except Exception:  # the log is best effort; serving must not notice
                logger.exception("decision log: writing %d records to %s failed", len(lines), path)
        with self._idle:
            self.written += written
            self.write_errors += len(batch) - written
            self._pending -= len(batch)
            self._idle.notify_all()

    # ---- reading back -----------------------------------------------------------------------

    def _scan(self, tenant_id: str, request_id: str) -> DecisionRecord | None:
        needle = f'"request_id":"{request_id}"'
        today = datetime.now(UTC).date()
        for back in range(self.lookback_days + 1):
            date = (today - timedelta(days=back)).strftime("%Y-%m-%d")
            infos = self.store.ls(self.store.path(f"tenant_id={tenant_id}", f"date={date}"))
            files = sorted(
                (i.path for i in infos if i.base_name.endswith(".jsonl") and i.base_name[0] != "."),
                reverse=True,
            )
            for path in files:
                for line in self.store.read_bytes(path).decode().splitlines():
                    if needle in line:
                        record = DecisionRecord.model_validate_json(line)
                        if record.tenant_id == tenant_id and record.request_id == request_id:
                            return record
        return None
