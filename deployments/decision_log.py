"""Where an Ingress replica's decision records go, by ``placement.decision_log``.

``deployment``: the ``DecisionLog`` deployment, the one place recent decisions of every
ingress replica land (a thin wrapper over :class:`core.decision_log.DecisionLogWriter`). The
ingress never awaits ``record``: it queues records locally in a bounded buffer
(:class:`DecisionForwarder`) and a background task ships them here in batches, so a slow disk
or a slow replica costs dropped (and counted) records, never request latency.

``ingress``: every Ingress replica writes its own records to the same log
(:class:`LocalDecisionLog`, the same writer in a thread of the replica) and answers lookups
of other replicas' records from the log's files. No hop and no extra process: on a 2-core
node the deployment cost ≈ 1 ms of CPU per request (a Serve call per shipment of ~1.5 MB,
its receive path) and ≈ 12 ms of CPU per second idle (docs/performance.md).

Both write the same files (:mod:`core.decision_log`'s layout; several writers never share a
file), so readers do not know which placement wrote them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from ray import serve

from core.contracts import DecisionRecord
from core.decision_log import DecisionLogWriter, LookupResult
from core.rate_limit import TenantRateLimiter
from deployments import metrics

logger = logging.getLogger("ray.serve")

ShippedRecord = tuple[str, str, datetime, bytes]
"""``(tenant_id, request_id, at, record JSON)``: a decision record as the ingress ships it."""


@serve.deployment(name="DecisionLog", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class DecisionLogDeployment:
    def __init__(self, decisions_uri: str, queue_size: int = 10_000, lru_size: int = 20_000,
                 miss_rate_per_s: float = 5.0, miss_burst: float = 20.0,
                 legacy_scan: bool = False, lru_bytes: int = 32 << 20):  # fmt: skip
        """``miss_rate_per_s``/``miss_burst``: each tenant's budget of lookups of ids that are
        not in the log (one limiter here, so the budget is global, not per ingress replica);
        ``legacy_scan``: also find old uuid4 request ids by scanning (costly; off)."""
        self.writer = DecisionLogWriter(
            decisions_uri, queue_size=queue_size, lru_size=lru_size, lru_bytes=lru_bytes,
            legacy_scan=legacy_scan,
            miss_limiter=TenantRateLimiter(miss_rate_per_s, miss_burst),
        )  # fmt: skip
        self._reported_drops = 0

    async def record(self, records: list[ShippedRecord | DecisionRecord]) -> int:
        """Queue a batch for writing; returns how many were dropped (queue full).

        The ingress ships each record as ``(tenant_id, request_id, at, json)``: the record was
        validated where it was built, so it is stored as those bytes without being parsed or
        re-validated here (a record holds every candidate; parsing it costs more than all the
        rest of this deployment's work)."""
        dropped = sum(not self._submit(r) for r in records)
        if dropped:
            metrics.DECISION_LOG_DROPS.labels("writer").inc(dropped)
        return dropped

    def _submit(self, r: ShippedRecord | DecisionRecord) -> bool:
        if isinstance(r, DecisionRecord):
            return self.writer.submit(r)
        tenant, request_id, at, raw = r
        return self.writer.submit_raw(tenant, request_id, at, raw)

    async def get(self, tenant_id: str, request_id: str) -> DecisionRecord | None:
        """Not rate-limited; the ingress should call :meth:`lookup`."""
        return await asyncio.to_thread(self.writer.get, tenant_id, request_id)

    async def lookup(self, tenant_id: str, request_id: str) -> tuple[DecisionRecord | None, float]:
        """``(record or None, retry_after_s)``: ``retry_after_s > 0`` means the tenant's budget
        of unknown-id lookups is spent: answer 429 with ``Retry-After``, not 404."""
        found = await asyncio.to_thread(self.writer.lookup, tenant_id, request_id)
        return found.record, found.retry_after_s

    async def flush(self, timeout_s: float = 10.0) -> bool:
        return await asyncio.to_thread(self.writer.flush, timeout_s)

    async def stats(self) -> dict[str, int]:
        w = self.writer
        return {"submitted": w.submitted, "written": w.written, "dropped": w.dropped,
                "write_errors": w.write_errors}  # fmt: skip

    async def metrics_text(self) -> str:
        return metrics.registry_text()

    def __del__(self):
        # Serve calls __del__ on graceful replica shutdown: write what is queued.
        try:
            self.writer.close(timeout_s=2.0)
        except Exception:
            pass


SHIPMENT_BYTES = 2 << 20
"""The most record JSON one shipment carries. Serve's gRPC transport between deployments
refuses a message over 4 MiB (``RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH``), and a record
with its candidates is ~120 KB: 256 records in one call (what a busy event loop gathered)
failed whole and were all lost. Half the limit leaves room for the call's own framing."""


class DecisionForwarder:
    """Ingress-side bounded buffer in front of the decision-log deployment.

    ``submit`` is synchronous and O(1); records over ``max_pending`` are dropped and counted.
    Records are queued as :data:`ShippedRecord` tuples (the JSON is the record's
    ``model_dump_json``). ``run`` (a background task) waits ``interval_s`` after the first
    pending record, then ships what is pending, at most ``batch_size`` records and
    ``batch_bytes`` of their JSON per call (a record larger than that goes alone): one hop per
    interval instead of one per request.
    """

    def __init__(self, handle, max_pending: int = 5_000, batch_size: int = 256,
                 interval_s: float = 0.1, batch_bytes: int = SHIPMENT_BYTES):  # fmt: skip
        self.handle = handle
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.interval_s = interval_s
        self._pending: list[ShippedRecord] = []
        self._wake = asyncio.Event()
        self.dropped = 0
        self._task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        """Start (or restart, if it died) the shipping task on the running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    def submit(self, record: ShippedRecord) -> bool:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            metrics.DECISION_LOG_DROPS.labels("ingress").inc()
            return False
        self._pending.append(record)
        self._wake.set()
        return True

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if self.interval_s:
                await asyncio.sleep(self.interval_s)
            self._wake.clear()
            while self._pending:
                batch = self._next_batch()
                try:
                    await self.handle.record.remote(batch)
                except Exception:  # the decision log is best effort; count and go on
                    logger.exception("decision log: shipping %d records failed", len(batch))
                    metrics.DECISION_LOG_DROPS.labels("ship_error").inc(len(batch))

    def _next_batch(self) -> list[ShippedRecord]:
        """Take the oldest pending records that fit one shipment (at least one)."""
        n, size = 0, 0
        for record in self._pending[: self.batch_size]:
            size += len(record[3])
            if n and size > self.batch_bytes:
                break
            n += 1
        batch = self._pending[:n]
        del self._pending[:n]
        return batch

    async def lookup(self, tenant_id: str, request_id: str) -> tuple[DecisionRecord | None, float]:
        """The DecisionLog deployment's :meth:`DecisionLogDeployment.lookup`."""
        return await self.handle.lookup.remote(tenant_id, request_id)

    def close(self, timeout_s: float = 2.0) -> None:
        """Nothing to write here: what is pending is shipped by :meth:`run` while it runs."""


class LocalDecisionLog:
    """This Ingress replica's own decision-log writer (``placement.decision_log: ingress``).

    The same interface as :class:`DecisionForwarder`: ``submit`` is synchronous, O(1) and
    never blocks (the writer's bounded queue; a record over ``queue_size`` is dropped and
    counted as a ``writer`` drop); a background thread writes batches every
    ``flush_interval_s``. ``lookup`` answers from the log's files (this replica's own recent
    records are in :class:`deployments.recent.RecentDecisions`, asked first), so another
    replica's record is found once its writer has written it (within ~``flush_interval_s``).
    Unknown-id lookups are rate-limited per tenant *per replica* (``miss_rate_per_s``,
    ``miss_burst``); :meth:`close` writes what is queued (the replica's graceful shutdown)."""

    def __init__(self, uri: str, queue_size: int = 10_000, miss_rate_per_s: float = 5.0,
                 miss_burst: float = 20.0, flush_interval_s: float = 0.5):  # fmt: skip
        # No memory of records here beyond one: the replica's RecentDecisions holds its own.
        self.writer = DecisionLogWriter(
            uri, queue_size=queue_size, lru_size=1, lru_bytes=1 << 20,
            flush_interval_s=flush_interval_s,
            miss_limiter=TenantRateLimiter(miss_rate_per_s, miss_burst),
        )  # fmt: skip

    @property
    def dropped(self) -> int:
        return self.writer.dropped

    def ensure_running(self) -> None:
        """The writer's thread runs from construction."""

    def submit(self, record: ShippedRecord) -> bool:
        tenant, request_id, at, raw = record
        if self.writer.submit_raw(tenant, request_id, at, raw):
            return True
        metrics.DECISION_LOG_DROPS.labels("writer").inc()
        return False

    async def lookup(self, tenant_id: str, request_id: str) -> tuple[DecisionRecord | None, float]:
        found: LookupResult = await asyncio.to_thread(self.writer.lookup, tenant_id, request_id)
        return found.record, found.retry_after_s

    def close(self, timeout_s: float = 2.0) -> None:
        self.writer.close(timeout_s)
