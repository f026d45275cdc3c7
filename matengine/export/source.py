"""Reading a version's table for export: which relation, which columns, which order.

Everything an export reads goes through :func:`version_relation`, the one place that names
table T of version N (the versions' storage may change; this function follows it).

Order: rows are sorted by the table's first root-id column, then by id, and a table is cut
into chunks of disjoint root-id ranges. Each chunk is one Parquet file, written in row groups
of :data:`ROW_GROUP_ROWS`, so the min/max statistics of the file and of each row group bound
the root ids inside: a reader filtering one root id skips every file and row group whose range
misses it. Tables without a root-id column are sorted and cut by id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import Connection, text

from matengine.db.connection import driver_connection
from matengine.db.identifiers import quote, version_schema
from matengine.query.columns import OutColumn, arrow_schema, table_columns
from matengine.query.reader import Fetch, read_batches
from matengine.schemas import AnnotationSchema

ROW_GROUP_ROWS = 16_384  # small groups: a one-root read fetches a few hundred kB


def version_relation(datastack: str, version: int, table: str) -> str:
    """The quoted relation holding table ``table`` of version ``version``."""
    return quote(version_schema(datastack, version), table)


@dataclass(frozen=True)
class ExportLayout:
    """The columns of an exported table (caveclient's wire columns) and its sort key."""

    columns: tuple[OutColumn, ...]
    sort_column: str  # first root-id column, or "id"

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(list(self.columns))

    @property
    def root_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.is_root]


def layout_of(schema: AnnotationSchema) -> ExportLayout:
    cols = table_columns(schema)
    roots = [c.name for c in cols.columns if c.is_root]
    return ExportLayout(cols.columns, roots[0] if roots else "id")


def _sort_expr(layout: ExportLayout) -> str:
    # a root never looked up is stored as NULL and exported as 0 (the wire convention)
    col = quote(layout.sort_column)
    return col if layout.sort_column == "id" else f"COALESCE({col}, 0)"


def plan_ranges(conn: Connection, relation: str, layout: ExportLayout, chunk_rows: int) -> list[list[int]]:
    """``[[lo, hi], …]``: disjoint, inclusive ranges of the sort key holding about
    ``chunk_rows`` rows each (a range never splits one key value, so one root's rows are in
    one file). Empty table: no ranges."""
    key = _sort_expr(layout)
    total = conn.execute(text(f"SELECT count(*) FROM {relation}")).scalar_one()
    if total == 0:
        return []
    parts = max(1, -(-total // chunk_rows))
    fractions = [i / parts for i in range(1, parts)]
    cuts = conn.execute(
        text(
            f"SELECT min({key}), max({key}), "
            f"percentile_disc(CAST(:f AS float8[])) WITHIN GROUP (ORDER BY {key}) FROM {relation}"
        ),
        {"f": fractions or [1.0]},
    ).one()
    lo, hi, quantiles = int(cuts[0]), int(cuts[1]), [int(q) for q in cuts[2]] if fractions else []
    starts = sorted({lo, *(q for q in quantiles if q > lo)})
    return [[a, (starts[i + 1] - 1) if i + 1 < len(starts) else hi] for i, a in enumerate(starts)]


def chunk_batches(
    conn: Connection, relation: str, layout: ExportLayout, lo: int, hi: int
) -> Iterator[pa.RecordBatch]:
    """Rows with sort key in ``[lo, hi]``, sorted by (key, id), in batches of
    :data:`ROW_GROUP_ROWS` (memory is one batch whatever the table's size)."""
    fetches = [
        Fetch(c.name, quote(c.db_column), c.kind, nullable=c.nullable and not c.zero_for_null)
        for c in layout.columns
    ]
    key = _sort_expr(layout)
    # the range on the stored column itself, so the version table's btree on it picks the
    # chunk's rows (an expression would scan the whole table once per chunk); a root never
    # looked up (NULL, exported as 0) belongs to the range holding 0
    col = quote(layout.sort_column)
    where = f"{col} BETWEEN %(lo)s AND %(hi)s"
    if layout.sort_column != "id" and lo <= 0 <= hi:
        where = f"({where} OR {col} IS NULL)"
    tail = f"FROM {relation} WHERE {where} ORDER BY {key}, id"
    schema = layout.schema
    driver = driver_connection(conn)
    for batch in read_batches(driver, tail, {"lo": lo, "hi": hi}, fetches, ROW_GROUP_ROWS):
        arrays = [
            pa.array(batch.values[c.name], type=c.arrow_type, mask=batch.nulls.get(c.name))
            for c in layout.columns
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
