"""The ingress replica's memory of its recent decisions: each record's JSON bytes (served as is
by ``GET /v1/decisions/{id}`` and shipped as is to the decision log), bounded, oldest out
first; and, per user, the newest request ids (the explain page's links)."""

from __future__ import annotations

from core.contracts import DecisionRecord, decision_bytes
from core.lru import SizedLRU
from deployments.explain import RecentRequests


class RecentDecisions:
    """Bytes, not records: a record is hundreds of nested objects the garbage collector would
    track. Not thread-safe: one per replica, used from its event loop."""

    def __init__(self, max_records: int = 20_000, max_bytes: int = 32 << 20):
        """At most ``max_records`` records and ``max_bytes`` of their JSON (oldest out)."""
        self._data = SizedLRU(max_records, max_bytes)
        self.by_user = RecentRequests()

    def add(self, record: DecisionRecord) -> bytes:
        data = decision_bytes(record)
        self._data.put((record.tenant_id, record.request_id), data)
        self.by_user.add(record.tenant_id, record.user_id, record.request_id)
        return data

    def get(self, tenant: str, request_id: str) -> bytes | None:
        """Only ``tenant``'s own records: another tenant's id looks like an unknown one."""
        return self._data.get((tenant, request_id))

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """What the records held take, as :class:`core.lru.SizedLRU` counts it."""
        return self._data.bytes
