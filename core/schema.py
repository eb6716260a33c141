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

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
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
        pa.field("seq", pa.int64()),
    ]
)
"""``seq`` is the event's arrival order within its source, used only to order events that
share a ``ts`` (a MovieLens file records ratings to the second): the importer's row in the
file, the event gateway's order of receipt (a per-process counter of nanoseconds since the
epoch, strictly increasing), null where the source has no order (the synthetic generator,
whose events carry distinct microsecond times, and logs written before the column existed).
Clients never send it: :func:`normalize_event` refuses it, the gateway assigns it. Ties on
``ts`` order by ``seq`` (nulls first), then event type and item id (see
:func:`event_order_keys`)."""

EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)


class RowError(ValueError):
    """A row that does not fit its schema. ``field`` names the offending column."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


MAX_POSITION = 2**31 - 1
"""``position`` is an int32 column."""
MAX_VALUE = 1e9
"""Upper bound of ``value`` (dwell seconds, a rating, or 1.0): anything larger is a client bug."""
_EPOCH_MIN, _EPOCH_MAX = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31 UTC
# Lone surrogates cannot be encoded as UTF-8 (Arrow/Parquet strings); C0/C1 control characters
# (NUL included) have no place in an id and break logs, CSV exports and C-string consumers.
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class EventBounds:
    """What an online event's timestamp may be, relative to the time it is received.

    Events outside ``[now - max_age, now + max_future_skew]`` are **rejected** (not clamped):
    a clamped timestamp would be a value the client never sent, and a retry of the same
    event would then differ from the stored one. ``max_age`` is how late an event may arrive
    (offline clients, retries) and should not exceed the event retention; ``max_future_skew``
    absorbs client clock skew. Without the upper bound one click dated years ahead holds
    trending rank 0 forever; without the lower bound a row dated 0001 makes an absurd date
    partition. Bulk imports (:meth:`core.eventlog.EventLog.write_table`) are not bounded.
    """

    max_age: timedelta = timedelta(days=30)
    max_future_skew: timedelta = timedelta(minutes=5)

    def check(self, ts: datetime, now: datetime, field: str = "ts") -> None:
        if ts < now - self.max_age:
            raise RowError(field, f"more than {_span(self.max_age)} in the past")
        if ts > now + self.max_future_skew:
            raise RowError(field, f"more than {_span(self.max_future_skew)} in the future")


def _span(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    return f"{s // 86400} days" if s % 86400 == 0 else f"{s} seconds"


def to_utc(value: Any, field: str = "ts") -> datetime:
    """Parse a timestamp (datetime, ISO-8601 string, or epoch seconds) into an aware UTC datetime.

    Raises :class:`RowError` for anything unparseable or outside years 0001..9999 UTC (which a
    ``datetime`` cannot hold), never ``OverflowError``/``OSError``."""
    try:
        return _to_utc(value, field)
    except (OverflowError, OSError, ValueError) as exc:
        if isinstance(exc, RowError):
            raise
        raise RowError(field, "timestamp out of range (years 0001..9999 UTC)") from None


def _to_utc(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise RowError(field, "expected a timestamp, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise RowError(field, "expected a finite epoch-seconds timestamp")
        if not _EPOCH_MIN <= value <= _EPOCH_MAX:
            raise RowError(field, "timestamp out of range (years 0001..9999 UTC)")
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        if len(value) > 64 or _BAD_TEXT.search(value):
            raise RowError(field, "not an ISO-8601 timestamp")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise RowError(field, f"not an ISO-8601 timestamp: {value!r}") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise RowError(field, f"expected a timestamp, got {type(value).__name__}")


def _check_text(field: str, value: str, max_len: int) -> str:
    if len(value) > max_len:
        raise RowError(field, f"longer than {max_len} characters")
    bad = _BAD_TEXT.search(value)
    if bad:
        what = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise RowError(field, f"contains {what} (U+{ord(bad.group()):04X})")
    return value


def _require_str(row: dict, field: str, max_len: int = 256) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value:
        raise RowError(field, "required non-empty string")
    return _check_text(field, value, max_len)


def _optional_str(row: dict, field: str, max_len: int = 256) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(field, "expected a string")
    return _check_text(field, value, max_len)


def normalize_event(
    row: dict, *, now: datetime | None = None, bounds: EventBounds | None = None
) -> dict:
    """Validate one event row and return it with canonical types (see :data:`EVENT_SCHEMA`).

    Raises :class:`RowError` naming the first bad field; never anything else, whatever the
    row holds. Unknown fields are an error: a typo in a client's payload must not silently
    drop data. Strings: no lone surrogates, no control characters (NUL included), bounded
    length. Integers and numbers: ``position`` in ``[0, 2**31)``, ``value`` finite in
    ``[0, MAX_VALUE]``, ``propensity`` in ``(0, 1]``. With ``now``, ``ts`` must also lie within
    ``bounds`` (default :class:`EventBounds`) around it.
    """
    if not isinstance(row, dict):
        raise RowError("event", "expected an object")
    unknown = set(row) - set(EVENT_COLUMNS)
    if unknown:
        name = sorted(unknown, key=repr)[0]
        raise RowError(name if isinstance(name, str) and not _BAD_TEXT.search(name) else "event",
                       "unknown field")  # fmt: skip
    event_type = _require_str(row, "event_type")
    if event_type not in EVENT_TYPES:
        raise RowError("event_type", f"must be one of {', '.join(EVENT_TYPES)}")
    raw_value = row.get("value", 1.0)
    if isinstance(raw_value, bool) or not isinstance(raw_value, int | float):
        raise RowError("value", "expected a number")
    try:
        value = float(raw_value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or not 0 <= value <= MAX_VALUE:
        raise RowError("value", f"expected a finite number in [0, {MAX_VALUE:g}]")
    position = row.get("position")
    if position is not None and (
        isinstance(position, bool) or not isinstance(position, int)
        or not 0 <= position <= MAX_POSITION
    ):  # fmt: skip
        raise RowError("position", f"expected an integer in [0, {MAX_POSITION}]")
    propensity = row.get("propensity")
    if propensity is not None:
        if isinstance(propensity, bool) or not isinstance(propensity, int | float):
            raise RowError("propensity", "expected a number in (0, 1]")
        try:
            propensity = float(propensity)
        except OverflowError:
            propensity = math.inf
        if not (0.0 < propensity <= 1.0):
            raise RowError("propensity", "expected a number in (0, 1]")
    if "ts" not in row or row["ts"] is None:
        raise RowError("ts", "required timestamp")
    if row.get("seq") is not None:
        raise RowError("seq", "arrival order is assigned by the gateway; do not send it")
    event = {
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
        "seq": None,
    }
    if now is not None:
        (bounds or EventBounds()).check(event["ts"], to_utc(now, "now"))
    return event


def event_fingerprint(event: dict) -> str:
    """A content hash of a normalised event (every column), to tell a retry of an event (same
    id, same content: a duplicate) from a different event reusing its id (a conflict). ``seq``
    is left out: it says when a copy arrived, not what the event is."""
    canon = {k: event.get(k) for k in EVENT_COLUMNS if k != "seq"}
    canon["ts"] = canon["ts"].isoformat(timespec="microseconds")
    blob = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def event_order_keys(ts, seq, event_type, item_id) -> tuple:
    """Keys for ``numpy.lexsort`` (last key primary) putting one user's events in the order
    every replay uses, offline and online: ``ts``, then arrival ``seq`` (null as -1: before
    any sequenced event of the same time), then event type and item id. Arrays of equal
    length; ``seq`` may be None (no such column), a float array with NaN, or object with
    None."""
    n = len(ts)
    if seq is None:
        s = np.full(n, -1, dtype=np.int64)
    else:
        arr = np.asarray(seq)
        if arr.dtype == object:
            s = np.array([-1 if v is None else int(v) for v in arr], dtype=np.int64)
        elif arr.dtype.kind == "f":
            s = np.where(np.isnan(arr), -1, arr).astype(np.int64)
        else:
            s = arr.astype(np.int64)
    return (item_id, event_type, s, ts)


def events_table(rows: list[dict]) -> pa.Table:
    """Build an :data:`EVENT_SCHEMA` table from already-normalised rows."""
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
