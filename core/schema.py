"""Canonical table schemas shared by the data generators, the event log, training and serving.

Every table the platform writes is Parquet with one of the Arrow schemas below. Timestamps are
UTC microseconds. Ids are strings so that real catalogues (ISBNs, UUIDs, slugs) fit unchanged.

Tables and their on-disk layout (under the storage URIs of ``configs/platform.yaml``):

* ``catalogue/tenant_id=<t>/part-*.parquet``                 — :data:`ITEM_SCHEMA`
* ``users/tenant_id=<t>/part-*.parquet``                     — :data:`USER_SCHEMA`
* ``events/tenant_id=<t>/date=<YYYY-MM-DD>/part-*.parquet``  — :data:`EVENT_SCHEMA`

Hive-style partition columns (``tenant_id``, ``date``) are part of the path, and the rows carry
``tenant_id`` as well, so a file read alone is still self-describing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "like", "hide", "dwell", "rating")
"""Event types. ``value`` means: dwell seconds for ``dwell``, the star rating for ``rating``,
1.0 otherwise."""

POSITIVE_EVENT_TYPES: frozenset[str] = frozenset({"click", "like", "dwell", "rating"})
"""Event types that count as a positive interaction for retrieval training and evaluation.
A ``rating`` counts as an interaction whatever its value (MovieLens convention)."""

MATURITY_LEVELS: tuple[str, ...] = ("general", "teen", "mature")
"""Maturity ratings, from least to most restricted. A user may see an item when the item's
level index is at most the user's ``max_maturity`` index."""

TS = pa.timestamp("us", tz="UTC")

ITEM_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("category", pa.string(), nullable=False),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("created_at", TS, nullable=False),
        pa.field("available_from", TS),
        pa.field("available_until", TS),
        pa.field("maturity", pa.string(), nullable=False),
    ]
)

USER_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("created_at", TS, nullable=False),
        pa.field("max_maturity", pa.string(), nullable=False),
    ]
)

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("surface", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("experiment_arm", pa.string()),
        pa.field("propensity", pa.float64()),
    ]
)

EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)


class RowError(ValueError):
    """A row that does not fit its schema. ``field`` names the offending column."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def to_utc(value: Any, field: str = "ts") -> datetime:
    """Parse a timestamp (datetime, ISO-8601 string, or epoch seconds) into an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise RowError(field, "expected a timestamp, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise RowError(field, "expected a finite epoch-seconds timestamp")
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise RowError(field, f"not an ISO-8601 timestamp: {value!r}") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise RowError(field, f"expected a timestamp, got {type(value).__name__}")


def _require_str(row: dict, field: str, max_len: int = 256) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value:
        raise RowError(field, "required non-empty string")
    if len(value) > max_len:
        raise RowError(field, f"longer than {max_len} characters")
    return value


def _optional_str(row: dict, field: str, max_len: int = 256) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(field, "expected a string")
    if len(value) > max_len:
        raise RowError(field, f"longer than {max_len} characters")
    return value


def normalize_event(row: dict) -> dict:
    """Validate one event row and return it with canonical types (see :data:`EVENT_SCHEMA`).

    Raises :class:`RowError` naming the first bad field. Unknown fields are an error: a typo
    in a client's payload must not silently drop data.
    """
    if not isinstance(row, dict):
        raise RowError("event", "expected an object")
    unknown = set(row) - set(EVENT_COLUMNS)
    if unknown:
        raise RowError(sorted(unknown)[0], "unknown field")
    event_type = _require_str(row, "event_type")
    if event_type not in EVENT_TYPES:
        raise RowError("event_type", f"must be one of {', '.join(EVENT_TYPES)}")
    raw_value = row.get("value", 1.0)
    if isinstance(raw_value, bool) or not isinstance(raw_value, int | float):
        raise RowError("value", "expected a number")
    value = float(raw_value)
    if not math.isfinite(value) or value < 0:
        raise RowError("value", "expected a finite, non-negative number")
    position = row.get("position")
    if position is not None and (
        isinstance(position, bool) or not isinstance(position, int) or position < 0
    ):
        raise RowError("position", "expected a non-negative integer")
    propensity = row.get("propensity")
    if propensity is not None:
        if isinstance(propensity, bool) or not isinstance(propensity, int | float):
            raise RowError("propensity", "expected a number in (0, 1]")
        propensity = float(propensity)
        if not (0.0 < propensity <= 1.0):
            raise RowError("propensity", "expected a number in (0, 1]")
    if "ts" not in row or row["ts"] is None:
        raise RowError("ts", "required timestamp")
    return {
        "event_id": _require_str(row, "event_id", 128),
        "tenant_id": _require_str(row, "tenant_id", 64),
        "user_id": _require_str(row, "user_id"),
        "item_id": _require_str(row, "item_id"),
        "event_type": event_type,
        "value": value,
        "ts": to_utc(row["ts"]),
        "surface": _optional_str(row, "surface", 64),
        "request_id": _optional_str(row, "request_id", 128),
        "position": position,
        "experiment_arm": _optional_str(row, "experiment_arm", 128),
        "propensity": propensity,
    }


def events_table(rows: list[dict]) -> pa.Table:
    """Build an :data:`EVENT_SCHEMA` table from already-normalised rows."""
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
