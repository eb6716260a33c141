"""The decision log: every served :class:`core.contracts.DecisionRecord`, written asynchronously.

Layout under the decisions root (any ``pyarrow.fs`` URI)::

    tenant_id=<t>/date=<YYYY-MM-DD>/part-<lo>-<hi>-<rand>.jsonl     one record per line

``<lo>``/``<hi>`` are the smallest and largest request time (12 hex digits of Unix
milliseconds) of the records in the file. Request ids made by :func:`new_request_id` carry
their time (the first 12 hex digits, as in a UUIDv7), and a record's date partition is the
date of that time, so a lookup knows the one directory and, by name alone, the file(s) that
can hold the id.

Invariants:

* :meth:`DecisionLogWriter.submit` never blocks and never raises: a record goes into a
  bounded queue or, when the queue is full, is dropped and counted (``dropped``). Serving
  latency does not depend on the disk.
* One background thread drains the queue in batches and writes each (tenant, date) group as
  one file that appears atomically (hidden temp name, then rename; one PUT on object stores).
* :meth:`DecisionLogWriter.get` is tenant-scoped: it answers from a bounded in-memory LRU of
  recent records, then from the tenant's own partitions. Another tenant's request id is
  simply not found.
* A lookup costs at most one directory listing and the read of the files whose time range
  holds the id's time (one, unless batches overlap), each at most ``max_file_bytes``; an id
  without a time (or outside ``lookback_days``) costs no I/O at all. Ids of the old format
  (uuid4) are found only in memory unless ``legacy_scan=True``, which scans as before.
* :meth:`DecisionLogWriter.lookup` also rate-limits unknown ids per tenant
  (:class:`core.rate_limit.TenantRateLimiter`): each miss that reached storage costs a token,
  and without one the lookup is refused (``retry_after_s``) before any I/O.

Length: the writer, its file layout and the constant-time lookup index are one storage
format; kept together so the layout is defined in one place.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.contracts import DecisionRecord, decision_bytes
from core.lru import SizedLRU
from core.rate_limit import TenantRateLimiter
from core.storage import Storage

logger = logging.getLogger(__name__)

_TIME_ID = re.compile(r"^[0-9a-f]{12}7[0-9a-f]{19}$")  # the '7' is where uuid4().hex has a '4'
_DAY_MS = 86_400_000
_FILE_RANGE = re.compile(r"^part-([0-9a-f]{12})-([0-9a-f]{12})-[0-9a-f]+\.jsonl$")


def new_request_id(at: datetime | None = None) -> str:
    """A request id that carries its time, laid out like a UUIDv7 without dashes: 12 hex digits
    of Unix milliseconds, the version digit ``7``, 19 random hex digits (76 bits). Same shape
    as ``uuid4().hex`` (32 lowercase hex digits), which has a ``4`` where this has the ``7``."""
    ms = int((at or datetime.now(UTC)).timestamp() * 1000)
    return f"{ms & (1 << 48) - 1:012x}7{secrets.token_hex(10)[:19]}"


def request_id_ms(request_id: str) -> int | None:
    """The Unix milliseconds in a :func:`new_request_id` id, or None if it has no time."""
    if not _TIME_ID.match(request_id):
        return None
    return int(request_id[:12], 16)


def _date_of_ms(ms: int) -> str | None:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class LookupResult:
    """What :meth:`DecisionLogWriter.lookup` found: the record (or None), or a refusal:
    ``retry_after_s > 0`` means the tenant's unknown-id budget is spent (answer 429)."""

    record: DecisionRecord | None
    retry_after_s: float = 0.0


class DecisionLogWriter:
    """Bounded, asynchronous decision-log writer with a recent-records LRU.

    ``queue_size`` bounds records waiting for the disk; ``lru_size`` and ``lru_bytes`` bound
    the records kept in memory for :meth:`get` (count and JSON size); ``flush_interval_s`` is the longest a queued record waits before
    its batch is written; ``lookback_days`` bounds how old a record :meth:`get` finds;
    ``max_file_bytes`` bounds a log file (what one lookup reads); ``legacy_scan``: also scan
    for ids without a time (the old uuid4 ids), day by day as before. ``miss_limiter``: the
    per-tenant budget of lookups that miss (default 5/s, burst 20).
    """

    def __init__(
        self,
        uri: str,
        *,
        queue_size: int = 10_000,
        lru_size: int = 20_000,
        lru_bytes: int = 32 << 20,
        batch_rows: int = 1000,
        flush_interval_s: float = 0.5,
        lookback_days: int = 7,
        max_file_bytes: int = 4 << 20,
        legacy_scan: bool = False,
        miss_limiter: TenantRateLimiter | None = None,
    ):
        self.store = Storage(uri)
        self.max_file_bytes = max_file_bytes
        self.legacy_scan = legacy_scan
        self.miss_limiter = miss_limiter or TenantRateLimiter(rate_per_s=5.0, burst=20)
        self.reads = 0  # log files read by lookups (observability; tests count them)
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.lookback_days = lookback_days
        # Queued and remembered records are kept as (tenant, date, JSON bytes): bytes are not
        # tracked by the garbage collector, while a record is hundreds of nested objects; and
        # they are what arrives, what is written and what is parsed back (never re-encoded).
        self._queue: queue.Queue[tuple[str, str, int, bytes]] = queue.Queue(maxsize=queue_size)
        self._recent = SizedLRU(lru_size, lru_bytes)
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
        ``raw``: the record's JSON (:func:`core.contracts.decision_bytes`) when the caller already has it."""
        if raw is None:
            raw = decision_bytes(record)
        return self.submit_raw(record.tenant_id, record.request_id, record.at, raw)

    def submit_raw(self, tenant_id: str, request_id: str, at: datetime, raw: str | bytes) -> bool:
        """:meth:`submit` for a record already serialised (and validated) by its producer:
        ``raw`` is its ``model_dump_json``; it is stored as is, never parsed here."""
        if isinstance(raw, str):
            raw = raw.encode()
        at_ms = int(at.timestamp() * 1000)
        ms = request_id_ms(request_id)
        if ms is None or abs(ms - at_ms) > _DAY_MS:  # no (credible) time: file it by ``at``
            ms = at_ms
        date = _date_of_ms(ms) or at.astimezone(UTC).strftime("%Y-%m-%d")
        with self._lock:
            self._recent.put((tenant_id, request_id), raw)
            try:
                self._queue.put_nowait((tenant_id, date, ms, raw))
            except queue.Full:
                self.dropped += 1
                return False
            self.submitted += 1
            self._pending += 1
        return True

    def get(self, tenant_id: str, request_id: str) -> DecisionRecord | None:
        """The tenant's record for ``request_id`` (memory, then log), or None. Not limited."""
        with self._lock:
            raw = self._recent.get((tenant_id, request_id))
        if raw is not None:
            return DecisionRecord.model_validate_json(raw)
        return self._find(tenant_id, request_id)

    def lookup(self, tenant_id: str, request_id: str) -> LookupResult:
        """:meth:`get`, with storage lookups that miss rate-limited per tenant: once a tenant
        has spent its budget, lookups not answered from memory are refused before any I/O."""
        with self._lock:
            raw = self._recent.get((tenant_id, request_id))
        if raw is not None:
            return LookupResult(DecisionRecord.model_validate_json(raw))
        wait = self.miss_limiter.peek(tenant_id)
        if wait > 0:
            return LookupResult(None, wait)
        record = self._find(tenant_id, request_id)
        if record is None:
            self.miss_limiter.charge(tenant_id)
        return LookupResult(record)

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

    def _write(self, batch: list[tuple[str, str, int, bytes]]) -> None:
        groups: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        for tenant, date, ms, raw in batch:
            groups.setdefault((tenant, date), []).append((ms, raw))
        written = 0
        for (tenant, date), records in groups.items():
            for chunk in self._chunks(sorted(records, key=lambda r: r[0])):
                lo, hi = chunk[0][0], chunk[-1][0]
                name = f"part-{lo:012x}-{hi:012x}-{uuid.uuid4().hex[:8]}.jsonl"
                path = self.store.path(f"tenant_id={tenant}", f"date={date}", name)
                try:
                    data = b"\n".join([raw for _, raw in chunk] + [b""])  # one line each
                    self.store.write_atomic(path, data)
                    written += len(chunk)
                except Exception:  # the log is best effort; serving must not notice
                    logger.exception(
                        "decision log: writing %d records to %s failed", len(chunk), path
                    )
        with self._idle:
            self.written += written
            self.write_errors += len(batch) - written
            self._pending -= len(batch)
            self._idle.notify_all()

    def _chunks(self, records: list[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
        """Consecutive runs of ``records`` of at most ``max_file_bytes`` (one record alone may
        exceed it): what one lookup reads stays small however large a batch is."""
        chunks: list[list[tuple[int, bytes]]] = [[]]
        size = 0
        for ms, raw in records:
            if chunks[-1] and size + len(raw) + 1 > self.max_file_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append((ms, raw))
            size += len(raw) + 1
        return chunks

    # ---- reading back -----------------------------------------------------------------------

    def _find(self, tenant_id: str, request_id: str) -> DecisionRecord | None:
        ms = request_id_ms(request_id)
        now_ms = int(time.time() * 1000)
        if ms is None or not now_ms - (self.lookback_days + 1) * _DAY_MS <= ms <= now_ms + _DAY_MS:
            return self._scan(tenant_id, request_id) if self.legacy_scan else None
        date = _date_of_ms(ms)
        infos = self.store.ls(self.store.path(f"tenant_id={tenant_id}", f"date={date}"))
        for info in sorted(infos, key=lambda i: i.base_name):
            m = _FILE_RANGE.match(info.base_name)
            if m and int(m.group(1), 16) <= ms <= int(m.group(2), 16):
                record = self._read_find(info.path, tenant_id, request_id)
                if record is not None:
                    return record
        return None

    def _read_find(self, path: str, tenant_id: str, request_id: str) -> DecisionRecord | None:
        self.reads += 1
        needle = f'"request_id":"{request_id}"'
        for line in self.store.read_bytes(path).decode().splitlines():
            if needle in line:
                record = DecisionRecord.model_validate_json(line)
                if record.tenant_id == tenant_id and record.request_id == request_id:
                    return record
        return None

    def _scan(self, tenant_id: str, request_id: str) -> DecisionRecord | None:
        """The old lookup, for ids without a time: every file of every day back."""
        today = datetime.now(UTC).date()
        for back in range(self.lookback_days + 1):
            date = (today - timedelta(days=back)).strftime("%Y-%m-%d")
            infos = self.store.ls(self.store.path(f"tenant_id={tenant_id}", f"date={date}"))
            files = sorted(
                (i.path for i in infos if i.base_name.endswith(".jsonl") and i.base_name[0] != "."),
                reverse=True,
            )
            for path in files:
                record = self._read_find(path, tenant_id, request_id)
                if record is not None:
                    return record
        return None
