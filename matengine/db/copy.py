"""PostgreSQL binary COPY buffers built from numpy columns, without a Python loop per row.

Each row of ``COPY … (FORMAT binary)`` is: int16 field count, then per field an int32 length
and the big-endian value. For fixed-width columns that is one numpy structured array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection

from matengine.db.identifiers import quote

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


def copy_in(conn: Connection, table_q: str, columns: Sequence[tuple[str, np.ndarray, str]]) -> None:
    """Binary COPY of numpy columns ``(name, values, sql type)`` into ``table_q`` (quoted), in
    ``conn``'s transaction: the one way matengine bulk-writes fixed-width columns."""
    from matengine.db.connection import driver_connection

    names = ", ".join(quote(c) for c, _, _ in columns)
    payload = binary_copy_buffer([(v, t) for _, v, t in columns])
    with (
        driver_connection(conn).cursor() as cur,
        cur.copy(f"COPY {table_q} ({names}) FROM STDIN (FORMAT binary)") as copy,
    ):
        copy.write(payload)


def copy_in_rows(conn: Connection, table_q: str, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Text COPY of Python rows into ``table_q`` (quoted): for tables with text columns, which
    the binary buffer does not encode. Still one COPY per call."""
    from matengine.db.connection import driver_connection

    cols = ", ".join(quote(c) for c in names)
    with driver_connection(conn).cursor() as cur, cur.copy(f"COPY {table_q} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
