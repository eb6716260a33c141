"""HTTP request and response bodies of the public API (``docs/api.md``).

These pydantic models are the API contract: FastAPI validates requests against them and
publishes them as the OpenAPI schema at ``/openapi.json``. Request models forbid unknown keys,
so a misspelt field is a 422 naming it rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 100
MAX_EVENTS_PER_REQUEST = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Request):
    user_id: str = Field(min_length=1, max_length=256)
    surface: str = Field(min_length=1, max_length=64)
    k: int = Field(10, ge=1, le=MAX_K, description="slate size")
    context: dict[str, Any] = Field(default_factory=dict)
    """Free-form request context, e.g. ``{"item_id": ...}`` on an item page."""
    exclude_item_ids: list[str] = Field(default_factory=list, max_length=1000)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    rank: int
    sources: list[str]
    reasons: list[str]


class ExperimentOut(BaseModel):
    id: str
    arm: str


class RecommendResponse(BaseModel):
    request_id: str
    items: list[RecommendedItem]
    versions: dict[str, str]
    """Model, index and config versions that produced the answer."""
    experiment: ExperimentOut | None
    fallback: str | None
    """``None`` when fully personalised, else why a fallback was served."""
    latency_ms: float


class EventsRequest(_Request):
    # Rows stay plain dicts here: core.schema.normalize_event is the one row validator, and a
    # bad row is reported per index in the response rather than failing the whole batch.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class RejectedEvent(BaseModel):
    index: int
    event_id: str | None
    field: str
    reason: str


class EventsResponse(BaseModel):
    accepted: list[str]
    duplicates: list[str]
    rejected: list[RejectedEvent]


class VersionsResponse(BaseModel):
    tenant: str
    config: str
    """Fingerprint of the platform config in service."""
    artifacts: dict[str, str]
    """Artifact kind -> version in service (``two_tower``, ``ann_index``, ``ranker``), as
    reported by the replicas that serve them; a kind missing here is not loaded (yet)."""


class HealthResponse(BaseModel):
    status: str
    config: str
    """The platform config version in service (tenant ids are never listed here)."""


class ErrorBody(BaseModel):
    code: str
    """Stable machine-readable code, e.g. ``unauthorized``, ``validation_error``."""
    message: str
    field: str | None = None
    """Dotted path of the offending request field, when one is to blame."""


class ErrorResponse(BaseModel):
    error: ErrorBody
