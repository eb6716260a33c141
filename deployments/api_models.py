"""HTTP request and response bodies of the public API (``docs/api.md``).

These pydantic models are the API contract: FastAPI validates requests against them and
publishes them as the OpenAPI schema at ``/openapi.json``. Request models are strict: unknown
keys are errors (a misspelt field is a 422 naming it rather than a silently ignored setting),
nothing is coerced (``k: "10"`` and ``k: true`` are 422, not 10 and 1), and ids are non-empty
strings without control characters (NUL included) or lone surrogates.

:func:`parse_request` is the strict body parser for handlers that authenticate first and
parse after (``Request.body()`` then this): it also refuses duplicate JSON keys (which
``json.loads`` would silently resolve to the last), ``NaN``/``Infinity`` and bodies that are
not UTF-8, each as a 422 :class:`deployments.errors.ApiError` naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from deployments.errors import ApiError, validation_error

MAX_K = 100
MAX_EVENTS_PER_REQUEST = 1000

_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _clean_text(value: str) -> str:
    if _BAD_TEXT.search(value):
        raise ValueError("must not contain control characters (NUL included) or lone surrogates")
    return value


Id = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_clean_text)]
"""An id in a request: a non-empty string of at most 256 clean characters."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Request):
    user_id: Id
    surface: Annotated[Id, Field(max_length=64)]
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="slate size")
    context: dict[str, Any] = Field(default_factory=dict)
    """Free-form request context, e.g. ``{"item_id": ...}`` on an item page."""
    exclude_item_ids: list[Id] = Field(default_factory=list, max_length=1000)


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
    degraded: list[str] = Field(default_factory=list)
    """What did not take part although the answer is not a fallback, e.g.
    ``source_timeout:two_tower`` (a personalised source missing from this slate),
    ``user_state_missing`` — the same list as the decision record's."""
    latency_ms: float
    trace_id: str | None = None
    """The OpenTelemetry trace id (32 hex digits) when this request was traced, else ``None``
    (tracing off or not sampled); the decision record carries the same."""


class EventsRequest(_Request):
    # Rows stay plain dicts here: core.schema.normalize_event is the one row validator, and a
    # bad row is reported per index in the response rather than failing the whole batch.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(raw: bytes | str) -> Any:
    """``raw`` as JSON, strictly: a 422 :class:`ApiError` for invalid UTF-8 or JSON, a
    duplicate key in any object (``field`` names the key), or ``NaN``/``Infinity``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise ApiError(422, "validation_error", "request body is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except DuplicateKey as dup:
        key = dup.key if not _BAD_TEXT.search(dup.key) else None
        raise ApiError(422, "validation_error", "duplicate key in the JSON body", key) from None
    except (ValueError, RecursionError):
        raise ApiError(422, "validation_error", "request body is not valid JSON") from None


Model = TypeVar("Model", bound=BaseModel)


def parse_request(model: type[Model], raw: bytes | str) -> Model:
    """Parse and validate a request body as ``model`` (after authentication); a 422
    :class:`ApiError` naming the first offending field (``k``, ``events.0``) otherwise."""
    data = parse_json_body(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, message = validation_error(exc.errors(include_url=False))
        raise ApiError(422, "validation_error", message, field) from None


class RejectedEvent(BaseModel):
    index: int
    event_id: str | None
    field: str
    reason: str


class EventsResponse(BaseModel):
    accepted: list[str]
    """Ids stored by this request (and to be applied to online state)."""
    duplicates: list[str]
    """Ids already stored with the same content: a retry; nothing done."""
    rejected: list[RejectedEvent]
    conflicts: list[str] = Field(default_factory=list)
    """Ids already stored (or earlier in this batch) with other content: not stored."""


class VersionsResponse(BaseModel):
    tenant: str
    config: str
    """Fingerprint of the platform config in service."""
    artifacts: dict[str, str]
    """Artifact kind -> version in service (``two_tower``, ``ann_index``, ``ranker``), as
    reported by the replicas that serve them; a kind missing here is not loaded (yet)."""
    production: dict[str, dict] = Field(default_factory=dict)
    """Artifact kind -> the registry's ``production`` alias: ``version``, ``at``, ``actor``,
    ``reason`` and ``break_glass`` (true when promoted without a passing review)."""
    tenant_config: str = "platform.yaml"
    """The ``tenant_config`` version this replica serves the tenant with (``platform.yaml``:
    none promoted, the bootstrap)."""
    rule_bundle: str = "inline"
    """The ``rule_bundle`` version whose rules this replica serves the tenant with (``inline``:
    the tenant config's own rules, because it does not reference a bundle or none is promoted)."""
    kill_switches: list[dict] = Field(default_factory=list)
    """Switches that are off: ``target``, ``name``, ``reason``, ``actor``, ``at``, and ``live``
    (this replica already serves with it)."""


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
