"""PostgreSQL binary COPY buffers built from numpy columns, without a Python loop per row.

Each row of ``COPY … (FORMAT binary)`` is: int16 field count, then per field an int32 length
and the big-endian value. For fixed-width columns that is one numpy structured array.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# SQL type -> big-endian numpy dtype of its binary representation
WIRE_TYPES = {
    "bigint": ">i8",
    "double precision": ">f8",
    "boolean": "?",
    "timestamptz": ">i8",
    "integer": ">i4",
}


def timestamptz_value(when: datetime) -> int:
    """Microseconds since 2000-01-01 UTC: PostgreSQL's binary timestamptz."""
    delta = when.astimezone(UTC) - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def binary_copy_buffer(columns: Sequence[tuple[np.ndarray, str]]) -> bytes:
    """One COPY-binary payload (header, rows, trailer) from equal-length 1-D columns.

    ``columns`` pairs an array with its SQL type (a key of :data:`WIRE_TYPES`); values are
    cast to the wire type (uint64 ids fit int8 by bit pattern, as PostgreSQL has no unsigned).
    """
    n = len(columns[0][0]) if columns else 0
    fields = [("count", ">i2")]
    for i, (_, sql_type) in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"val{i}", WIRE_TYPES[sql_type])]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["count"] = len(columns)
    for i, (values, sql_type) in enumerate(columns):
        if len(values) != n:
            raise ValueError("columns of different lengths")
        wire = np.dtype(WIRE_TYPES[sql_type])
        rows[f"len{i}"] = wire.itemsize
        if values.dtype.kind == "u" and wire.kind == "i":
            values = values.view(values.dtype.str.replace("u", "i"))
        rows[f"val{i}"] = values
    return HEADER + rows.tobytes() + TRAILER
