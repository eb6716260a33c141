"""Event time in the two shapes the code needs: one value, or a whole Arrow column.

Events carry ``ts`` as an aware datetime (tables: ``timestamp[us, UTC]``), an ISO-8601 string
or epoch seconds (live events after :func:`core.schema.normalize_event`); everything that
counts or decays works in epoch seconds.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.schema import to_utc


def epoch_seconds(ts: Any) -> float:
    """One timestamp (datetime, ISO string or epoch seconds) as float epoch seconds."""
    return float(ts) if isinstance(ts, float | int) else to_utc(ts).timestamp()


def column_micros(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A timestamp column as int64 epoch microseconds (any unit or zone in, UTC out)."""
    return pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())


def column_seconds(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A timestamp column as float64 epoch seconds."""
    return pc.divide(pc.cast(column_micros(column), pa.float64()), 1e6)
