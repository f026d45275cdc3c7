"""SQL text of a query, from checked specs: identifiers quoted, values as named parameters.

Filters compare the stored columns themselves (not ``COALESCE``d or rescaled output
expressions), so PostgreSQL can use the indexes of version tables: btree on ``id`` and each
``<pt>_root_id``, GiST on ``point(<pt>_position_x, <pt>_position_y)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matengine.db.identifiers import quote
from matengine.query.columns import ColKind, OutColumn
from matengine.query.reader import Fetch
from matengine.query.spec import Filter

SQL_TYPES = {
    ColKind.INT: "bigint",
    ColKind.FLOAT: "float8",
    ColKind.BOOL: "boolean",
    ColKind.TEXT: "text",
    ColKind.TIME: "timestamptz",
}
_COMPARE = {"equal": "=", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}


@dataclass
class Binder:
    """Collects parameter values; returns placeholders with an explicit type cast."""

    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, sql_type: str | None = None) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"CAST(%({name})s AS {sql_type})" if sql_type else f"%({name})s"


@dataclass(frozen=True)
class Source:
    """Where rows come from: a version table (``a`` only), a live table joined to its
    segmentation table (``a`` + ``s``), or version tables joined to each other (``j0``,
    ``j1``: a column's ``source`` names its table)."""

    from_sql: str
    live: bool
    order_by: str = "a.id"
    first_id: str = "a.id"  # the id of the first table: what rows are ordered by first

    def ref(self, col: OutColumn) -> str:
        if self.live and col.name == "valid":
            # a row in the state at T was valid at T, whatever happened to it later (the
            # live column says whether it is valid *now*): output and filters agree on this
            return "true"
        if col.source.startswith("j"):
            alias = col.source
        else:
            alias = "s" if self.live and col.source == "s" else "a"
        return f"{alias}.{quote(col.db_column)}"


def version_source(
    datastack: str, version: int, table: str, schema_type: str, sample_percent: float | None, binder: Binder
) -> Source:
    """Rows of ``table`` at ``version``: its relation in the version store (a view), or a
    sample of the store restricted to the version (``TABLESAMPLE`` needs a table)."""
    from matengine import version_store

    if sample_percent is None:
        return Source(f"FROM {version_store.version_relation(datastack, version, table)} AS a", live=False)
    sample = f" TABLESAMPLE BERNOULLI ({binder.bind(sample_percent, 'float8')})"
    inner = version_store.version_sample_source(datastack, version, table, schema_type, sample)
    return Source(f"FROM {inner} AS a", live=False)


def live_source(
    live_q: str, segmentation_q: str | None, sample_percent: float | None, binder: Binder
) -> Source:
    sample = ""
    if sample_percent is not None:
        sample = f" TABLESAMPLE BERNOULLI ({binder.bind(sample_percent, 'float8')})"
    join = f" LEFT JOIN {segmentation_q} AS s ON s.id = a.id" if segmentation_q else ""
    return Source(f"FROM {live_q} AS a{sample}{join}", live=True)


def time_rule(binder: Binder, timestamp: Any) -> str:
    """docs/design.md §3: created <= T and (deleted is null or deleted > T)."""
    t = binder.bind(timestamp, "timestamptz")
    return f"a.created <= {t} AND (a.deleted IS NULL OR a.deleted > {t})"


Scales = dict[str, tuple[float, float, float] | None]  # by column source: position factors


def output_fetch(col: OutColumn, source: Source, scales: Scales, binder: Binder) -> Fetch:
    expr = source.ref(col)
    scale = scales.get(col.source)
    if col.axis is not None and scale is not None and scale[col.axis] != 1.0:
        expr = f"({expr} * {binder.bind(scale[col.axis], 'float8')})"
    return Fetch(col.name, expr, col.kind, nullable=col.nullable and not col.zero_for_null)


def filter_sql(f: Filter, source: Source, binder: Binder) -> str:
    if f.op == "bbox":
        x, y, z = (source.ref(c) for c in f.columns)
        (x0, y0, z0), (x1, y1, z1) = f.value
        b = [binder.bind(v, "float8") for v in (x0, y0, x1, y1, z0, z1)]
        # box() orders its corners itself; BETWEEN SYMMETRIC does the same for z
        return (
            f"point({x}, {y}) <@ box(point({b[0]}, {b[1]}), point({b[2]}, {b[3]})) "
            f"AND {z} BETWEEN SYMMETRIC {b[4]} AND {b[5]}"
        )
    ref = source.ref(f.column)
    sql_type = SQL_TYPES[f.column.kind]
    if f.op == "in":
        return f"{ref} = ANY({binder.bind(list(f.value), sql_type + '[]')})"
    if f.op == "notin":
        return f"({ref} IS NULL OR {ref} <> ALL({binder.bind(list(f.value), sql_type + '[]')}))"
    if f.op == "regex":
        return f"{ref} ~ {binder.bind(f.value, 'text')}"
    return f"{ref} {_COMPARE[f.op]} {binder.bind(f.value, sql_type)}"


def root_candidates_sql(
    root: OutColumn, svid: OutColumn, source: Source, candidates: list[int], binder: Binder
) -> str:
    """Live prefilter of a root filter: stored root among the candidates, or not looked up."""
    r, s = source.ref(root), source.ref(svid)
    # a null root is looked up at T when its supervoxel is known, and is sent as 0 otherwise
    unknown = f"{r} IS NULL" if 0 in candidates else f"({r} IS NULL AND {s} IS NOT NULL)"
    return f"({r} = ANY({binder.bind(candidates, 'bigint[]')}) OR {unknown})"


def select_tail(
    source: Source,
    where: list[str],
    binder: Binder,
    *,
    limit: int | None = None,
    offset: int = 0,
    order: bool = True,
) -> str:
    """``FROM … WHERE … ORDER BY a.id LIMIT … OFFSET …`` (what follows the select list)."""
    sql = source.from_sql
    if where:
        sql += " WHERE " + " AND ".join(f"({w})" for w in where)
    if order:
        sql += f" ORDER BY {source.order_by}"
    if limit is not None:
        sql += f" LIMIT {binder.bind(int(limit), 'bigint')}"
    if offset:
        sql += f" OFFSET {binder.bind(int(offset), 'bigint')}"
    return sql
