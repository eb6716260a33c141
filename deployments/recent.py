"""The ingress replica's memory of its recent decisions: each record's JSON bytes (served as is
by ``GET /v1/decisions/{id}`` and shipped as is to the decision log), bounded, oldest out
first; and, per user, the newest request ids (the explain page's links)."""

from __future__ import annotations

from core.contracts import DecisionRecord
from deployments.explain import RecentRequests


class RecentDecisions:
    """Bytes, not records: a record is hundreds of nested objects the garbage collector would
    track. Not thread-safe: one per replica, used from its event loop."""

    def __init__(self, max_records: int = 20_000):
        self.max_records = max_records
        self._data: dict[tuple[str, str], bytes] = {}
        self.by_user = RecentRequests()

    def add(self, record: DecisionRecord) -> bytes:
        data = record.model_dump_json().encode()
        self._data[(record.tenant_id, record.request_id)] = data
        if len(self._data) > self.max_records:
            self._data.pop(next(iter(self._data)))  # dicts keep insertion order: oldest
        self.by_user.add(record.tenant_id, record.user_id, record.request_id)
        return data

    def get(self, tenant: str, request_id: str) -> bytes | None:
        """Only ``tenant``'s own records: another tenant's id looks like an unknown one."""
        return self._data.get((tenant, request_id))

    def __len__(self) -> int:
        return len(self._data)
