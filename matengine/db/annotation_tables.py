"""DDL of the per-datastack tables: live annotation tables, their segmentation tables, indexes.

Layout in PostgreSQL: the live tables of datastack ``ds`` live in schema ``ds``; the
segmentation table of ``t`` is ``ds.t__<pcg>`` (the field's name rule); version N lives in schema
``ds__matN`` (:mod:`matengine.db.versions`).

Bounding boxes: each point gets a GiST index on the built-in ``point(x, y)`` type; a query
tests ``point(x, y) <@ box(...)`` (index) and ``z BETWEEN`` (recheck). No extension is needed,
so the same SQL runs on a bare PostgreSQL 15–18.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from matengine.db.identifiers import quote, validate_name
from matengine.schemas import AnnotationSchema

CRUD_COLUMNS = [
    ("id", "bigint"),
    ("created", "timestamptz"),
    ("deleted", "timestamptz"),
    ("superceded_id", "bigint"),
    ("valid", "boolean"),
]


@dataclass(frozen=True)
class TableNames:
    """Names of one annotation table's objects in one datastack (all validated)."""

    datastack: str
    table: str
    segmentation_suffix: str

    def __post_init__(self) -> None:
        validate_name(self.datastack, "datastack name")
        validate_name(self.table, "table name")
        validate_name(self.segmentation, "segmentation table name")

    @property
    def segmentation(self) -> str:
        return f"{self.table}__{self.segmentation_suffix}"

    @property
    def live_q(self) -> str:
        return quote(self.datastack, self.table)

    @property
    def segmentation_q(self) -> str:
        return quote(self.datastack, self.segmentation)

    @property
    def sequence_q(self) -> str:
        return quote(self.datastack, f"{self.table}_id_seq")


def point_index_sql(index: str, table_q: str, point: str) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {quote(index)} ON {table_q} USING gist "
        f"(point({quote(point + '_position_x')}, {quote(point + '_position_y')}))"
    )


def live_index_statements(names: TableNames, schema: AnnotationSchema) -> list[str]:
    """Secondary indexes of the live annotation table (dropped and rebuilt around bulk loads)."""
    t, q = names.table, names.live_q
    stmts = [
        f"CREATE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{t}_created'))} ON {q} (created)",
        f"CREATE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{t}_deleted'))} ON {q} (deleted)",
    ]
    for f in schema.points:
        stmts.append(point_index_sql(validate_name(f"ix_{t}_{f.name}_bbox"), q, f.name))
    for f in schema.fields:
        if f.index and not f.is_point:
            stmts.append(
                f"CREATE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{t}_{f.name}'))} "
                f"ON {q} ({quote(f.name)})"
            )
    return stmts


def pending_condition(schema: AnnotationSchema, alias: str = "") -> str:
    """SQL condition: this segmentation row still lacks a supervoxel or root id."""
    prefix = f"{alias}." if alias else ""
    parts = [f"{prefix}{quote(c.name)} IS NULL" for c in schema.segmentation_columns()]
    return "(" + " OR ".join(parts) + ")"


def segmentation_index_statements(names: TableNames, schema: AnnotationSchema) -> list[str]:
    s, q = names.segmentation, names.segmentation_q
    stmts = []
    for pt in schema.bound_points:
        stmts.append(
            f"CREATE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{s}_{pt}_root_id'))} "
            f"ON {q} ({quote(pt + '_root_id')})"
        )
    # a partial index holding just the rows that wait for ingest: finding them costs nothing
    # on a fully ingested table
    stmts.append(
        f"CREATE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{s}_pending'))} ON {q} (id) "
        f"WHERE {pending_condition(schema)}"
    )
    return stmts


def create_tables(conn: Connection, names: TableNames, schema: AnnotationSchema) -> None:
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(names.datastack)}"))
    cols = ",\n  ".join(f"{quote(c.name)} {c.sql_type}" for c in schema.annotation_columns())
    conn.execute(text(f"CREATE SEQUENCE {names.sequence_q}"))
    conn.execute(
        text(
            f"CREATE TABLE {names.live_q} (\n"
            f"  id bigint PRIMARY KEY DEFAULT nextval('{names.datastack}.{names.table}_id_seq'),\n"
            f"  created timestamptz NOT NULL,\n"
            f"  deleted timestamptz,\n"
            f"  superceded_id bigint,\n"
            f"  valid boolean NOT NULL DEFAULT true,\n"
            f"  {cols}\n)"
        )
    )
    conn.execute(text(f"ALTER SEQUENCE {names.sequence_q} OWNED BY {names.live_q}.id"))
    for stmt in live_index_statements(names, schema):
        conn.execute(text(stmt))
    if schema.bound_points:
        seg_cols = ",\n  ".join(
            f"{quote(c.name)} {c.sql_type}" for c in schema.segmentation_columns()
        )
        conn.execute(
            text(f"CREATE TABLE {names.segmentation_q} (\n  id bigint PRIMARY KEY,\n  {seg_cols}\n)")
        )
        for stmt in segmentation_index_statements(names, schema):
            conn.execute(text(stmt))


def drop_tables(conn: Connection, names: TableNames) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {names.segmentation_q}"))
    conn.execute(text(f"DROP TABLE IF EXISTS {names.live_q}"))
