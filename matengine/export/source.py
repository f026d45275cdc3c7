"""Reading a version's table for export: which relation, which columns, which order.

Everything an export reads goes through :func:`version_relation`, the one place that names
table T of version N (the versions' storage may change; this function follows it).

Order (``--order``): ``root`` (the default) sorts rows by the table's first root-id column,
then by id, and cuts a table into chunks of disjoint root-id ranges. ``space`` sorts them by a
Morton (Z-order) key of the table's first point, then by id, and cuts disjoint key ranges (see
:class:`SpaceKey`). Each chunk is one Parquet file, written in row groups of
:data:`ROW_GROUP_ROWS`, so the min/max statistics of the file and of each row group bound what
is inside: in root order the root ids (a reader filtering one root skips every file and row
group whose range misses it), in space order the positions (a reader filtering a box skips
every file and row group whose bounds miss it). Tables without a root-id column (root order)
or without a point (space order) are sorted and cut by id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, text

from matengine.db.connection import driver_connection
from matengine.db.identifiers import quote, version_schema
from matengine.query.columns import OutColumn, arrow_schema, table_columns
from matengine.query.reader import Fetch, read_batches
from matengine.schemas import AnnotationSchema

ROW_GROUP_ROWS = 16_384  # small groups: a one-root read fetches a few hundred kB
ORDERS = ("root", "space")
SPACE_BITS = 16  # per axis: the space key quantises each coordinate to 65,536 cells
NULL_KEY = 1 << (3 * SPACE_BITS)  # rows without a position: after every other key


def _spread8(v: int) -> int:
    """Bits 0..7 of ``v`` moved to bits 0, 3, 6, …, 21."""
    return sum(((v >> i) & 1) << (3 * i) for i in range(8))


SPREAD = [_spread8(v) for v in range(256)]  # a lookup table, bound as an int8[] parameter


def morton_key(qx: int, qy: int, qz: int) -> int:
    """The space key of a quantised position: bit i of x, y, z at bits 3i, 3i+1, 3i+2 (what the
    SQL of :meth:`SpaceKey.sql` computes; for readers and tests)."""
    out = 0
    for i in range(SPACE_BITS):
        out |= ((qx >> i) & 1) << (3 * i) | ((qy >> i) & 1) << (3 * i + 1) | ((qz >> i) & 1) << (3 * i + 2)
    return out


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

    @property
    def point_columns(self) -> list[str]:
        """``<pt>_position_x/_y/_z`` of the table's first point (empty: no point)."""
        return [c.name for c in self.columns if c.is_position][:3]


def layout_of(schema: AnnotationSchema) -> ExportLayout:
    cols = table_columns(schema)
    roots = [c.name for c in cols.columns if c.is_root]
    return ExportLayout(cols.columns, roots[0] if roots else "id")


@dataclass(frozen=True)
class SpaceKey:
    """The ``space`` order's key: a Morton (Z-order) code of the first point's position.

    Each coordinate is quantised to ``2**SPACE_BITS`` cells over the version's bounds of that
    axis (``low``, ``high``: min and max, read once when the export is planned and kept in the
    plan): ``q = floor((v - low) * 2**SPACE_BITS / (high - low))``, clamped to
    ``[0, 2**SPACE_BITS - 1]`` (``q = 0`` on an axis whose values are all equal). Bit i of
    ``qx, qy, qz`` goes to bit ``3i, 3i + 1, 3i + 2`` of the key (:func:`morton_key`). A row
    with any coordinate null gets :data:`NULL_KEY`, after all others. Computed by PostgreSQL
    in float8 and int8 arithmetic (a bit-spreading lookup table of 256 entries): the same
    version gives the same keys."""

    columns: tuple[str, str, str]
    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def scales(self) -> list[float]:
        cells = float(1 << SPACE_BITS)
        return [cells / (h - lo) if h > lo else 0.0 for lo, h in zip(self.low, self.high, strict=True)]

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"space_spread": SPREAD}
        for axis, (lo, scale) in enumerate(zip(self.low, self.scales(), strict=True)):
            out[f"space_low{axis}"], out[f"space_scale{axis}"] = lo, scale
        return out

    def sql(self, mark: Callable[[str], str]) -> str:
        """The key as a SQL expression; ``mark(name)`` writes the placeholder of parameter
        ``name`` (``:name`` for SQLAlchemy, ``%(name)s`` for psycopg)."""
        top = (1 << SPACE_BITS) - 1
        spread = f"CAST({mark('space_spread')} AS int8[])"
        parts = []
        for axis, column in enumerate(self.columns):
            scaled = f"({quote(column)} - CAST({mark(f'space_low{axis}')} AS float8))"
            scaled = f"({scaled} * CAST({mark(f'space_scale{axis}')} AS float8))"
            q = f"CAST(LEAST(GREATEST(floor({scaled}), 0), {top}) AS int8)"
            spread_q = f"(({spread})[({q} & 255) + 1] | (({spread})[({q} >> 8) + 1] << 24))"
            parts.append(f"({spread_q} << {axis})")
        # not COALESCE: GREATEST and LEAST skip nulls, so a null coordinate would be cell 0
        absent = " OR ".join(f"{quote(c)} IS NULL" for c in self.columns)
        return f"(CASE WHEN {absent} THEN {NULL_KEY} ELSE ({' | '.join(parts)}) END)"

    def to_json(self) -> dict[str, Any]:
        """What the manifest says of the key: enough for a reader to recompute it."""
        return {
            "curve": "morton",
            "columns": list(self.columns),
            "bits_per_axis": SPACE_BITS,
            "low": list(self.low),
            "high": list(self.high),
            "cell": "floor((v - low) * 2**bits_per_axis / (high - low)), clamped to "
            "[0, 2**bits_per_axis - 1]; 0 where high == low",
            "interleave": "bit i of x, y, z at bits 3i, 3i+1, 3i+2",
            "null_key": NULL_KEY,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpaceKey:
        x, y, z = data["columns"]
        return cls((x, y, z), _three(data["low"]), _three(data["high"]))


def space_key(conn: Connection, relation: str, layout: ExportLayout) -> SpaceKey | None:
    """The space key of the table at this version: its first point's bounds (one scan), or
    None for a table without a point (sorted by id then)."""
    cols = layout.point_columns
    if len(cols) != 3:
        return None
    select = ", ".join(f"min({quote(c)}), max({quote(c)})" for c in cols)
    row = conn.execute(text(f"SELECT {select} FROM {relation}")).one()
    low = _three([row[2 * i] if row[2 * i] is not None else 0.0 for i in range(3)])
    high = _three([row[2 * i + 1] if row[2 * i + 1] is not None else 0.0 for i in range(3)])
    return SpaceKey((cols[0], cols[1], cols[2]), low, high)


def _three(values: Any) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def sorted_by(layout: ExportLayout, space: SpaceKey | None = None) -> list[str]:
    """The manifest's ``sorted_by``: the order of the rows, exactly."""
    if space is not None:
        return [f"morton({', '.join(space.columns)})", "id"]
    return [layout.sort_column, "id"] if layout.sort_column != "id" else ["id"]


def _sort_expr(layout: ExportLayout, space: SpaceKey | None, mark: Callable[[str], str]) -> str:
    if space is not None:
        return space.sql(mark)
    # a root never looked up is stored as NULL and exported as 0 (the wire convention)
    col = quote(layout.sort_column)
    return col if layout.sort_column == "id" else f"COALESCE({col}, 0)"


def plan_ranges(
    conn: Connection,
    relation: str,
    layout: ExportLayout,
    chunk_rows: int,
    space: SpaceKey | None = None,
) -> list[list[int]]:
    """``[[lo, hi], …]``: disjoint, inclusive ranges of the sort key (``space``: the space
    key, else the first root id) holding about ``chunk_rows`` rows each (a range never splits
    one key value, so one root's rows are in one file). Empty table: no ranges."""
    key = _sort_expr(layout, space, lambda name: f":{name}")
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
        {"f": fractions or [1.0], **(space.params() if space else {})},
    ).one()
    lo, hi, quantiles = int(cuts[0]), int(cuts[1]), [int(q) for q in cuts[2]] if fractions else []
    starts = sorted({lo, *(q for q in quantiles if q > lo)})
    return [[a, (starts[i + 1] - 1) if i + 1 < len(starts) else hi] for i, a in enumerate(starts)]


def chunk_batches(
    conn: Connection,
    relation: str,
    layout: ExportLayout,
    lo: int,
    hi: int,
    space: SpaceKey | None = None,
) -> Iterator[pa.RecordBatch]:
    """Rows with sort key in ``[lo, hi]``, sorted by (key, id), in batches of
    :data:`ROW_GROUP_ROWS` (memory is one batch whatever the table's size)."""
    fetches = [
        Fetch(c.name, quote(c.db_column), c.kind, nullable=c.nullable and not c.zero_for_null)
        for c in layout.columns
    ]
    key = _sort_expr(layout, space, lambda name: f"%({name})s")
    params: dict[str, Any] = {"lo": lo, "hi": hi}
    if space is not None:
        # no index holds the space key: each chunk scans the table once (docs/export.md)
        where = f"{key} BETWEEN %(lo)s AND %(hi)s"
        params.update(space.params())
    else:
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
    for batch in read_batches(driver, tail, params, fetches, ROW_GROUP_ROWS):
        arrays = [
            pa.array(batch.values[c.name], type=c.arrow_type, mask=batch.nulls.get(c.name))
            for c in layout.columns
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
