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
    def sequence(self) -> str:
        """``ds.table_id_seq``: the id sequence as a regclass literal (parts validated)."""
        return f"{self.datastack}.{self.table}_id_seq"

    @property
    def sequence_q(self) -> str:
        return quote(self.datastack, f"{self.table}_id_seq")


def _index(name: str, table_q: str, body: str) -> tuple[str, str]:
    name = validate_name(name, "index name")
    return name, f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {table_q} {body}"


def point_index(name: str, table_q: str, point: str) -> tuple[str, str]:
    """GiST on ``point(x, y)``: answers ``point(x, y) <@ box(...)``, the bbox test."""
    x, y = quote(point + "_position_x"), quote(point + "_position_y")
    return _index(name, table_q, f"USING gist (point({x}, {y}))")


def live_indexes(names: TableNames, schema: AnnotationSchema) -> list[tuple[str, str]]:
    """(name, DDL) of the live table's secondary indexes (dropped and rebuilt around bulk loads)."""
    t, q = names.table, names.live_q
    out = [_index(f"ix_{t}_created", q, "(created)"), _index(f"ix_{t}_deleted", q, "(deleted)")]
    out += [point_index(f"ix_{t}_{f.name}_bbox", q, f.name) for f in schema.points]
    out += [
        _index(f"ix_{t}_{f.name}", q, f"({quote(f.name)})")
        for f in schema.fields
        if f.index and not f.is_point
    ]
    return out


def pending_condition(schema: AnnotationSchema, alias: str = "") -> str:
    """SQL condition: this segmentation row still lacks a supervoxel or root id."""
    prefix = f"{alias}." if alias else ""
    parts = [f"{prefix}{quote(c.name)} IS NULL" for c in schema.segmentation_columns()]
    return "(" + " OR ".join(parts) + ")"


def no_segmentation_condition(schema: AnnotationSchema, alias: str = "") -> str:
    """SQL condition: some point of this row lies where the segmentation has no supervoxel."""
    prefix = f"{alias}." if alias else ""
    parts = [f"{prefix}{quote(pt + '_supervoxel_id')} = 0" for pt in schema.bound_points]
    return "(" + " OR ".join(parts) + ")"


def segmentation_index_bodies(names: TableNames, schema: AnnotationSchema) -> list[tuple[str, str]]:
    """(name, what follows ``ON <table>``) of the segmentation table's secondary indexes."""
    s = names.segmentation
    out = [(f"ix_{s}_{pt}_root_id", f"({quote(pt + '_root_id')})") for pt in schema.bound_points]
    # partial indexes holding just the rows that wait for ingest, and the rows outside the
    # segmentation: finding or counting them costs nothing on a fully ingested table
    out.append((f"ix_{s}_pending", f"(id) WHERE {pending_condition(schema)}"))
    out.append((f"ix_{s}_no_seg", f"(id) WHERE {no_segmentation_condition(schema)}"))
    return [(validate_name(name, "index name"), body) for name, body in out]


def segmentation_indexes(names: TableNames, schema: AnnotationSchema) -> list[tuple[str, str]]:
    q = names.segmentation_q
    return [_index(name, q, body) for name, body in segmentation_index_bodies(names, schema)]


def all_indexes(names: TableNames, schema: AnnotationSchema) -> list[tuple[str, str]]:
    out = live_indexes(names, schema)
    if schema.bound_points:
        out += segmentation_indexes(names, schema)
    return out


def drop_indexes(conn: Connection, names: TableNames, schema: AnnotationSchema) -> None:
    for name, _ in all_indexes(names, schema):
        conn.execute(text(f"DROP INDEX IF EXISTS {quote(names.datastack, name)}"))


def build_indexes(conn: Connection, names: TableNames, schema: AnnotationSchema) -> None:
    for _, ddl in all_indexes(names, schema):
        conn.execute(text(ddl))


def create_tables(conn: Connection, names: TableNames, schema: AnnotationSchema) -> None:
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(names.datastack)}"))
    cols = ",\n  ".join(f"{quote(c.name)} {c.sql_type}" for c in schema.annotation_columns())
    conn.execute(text(f"CREATE SEQUENCE {names.sequence_q}"))
    conn.execute(
        text(
            f"CREATE TABLE {names.live_q} (\n"
            f"  id bigint PRIMARY KEY DEFAULT nextval('{names.sequence}'),\n"
            f"  created timestamptz NOT NULL,\n"
            f"  deleted timestamptz,\n"
            f"  superceded_id bigint,\n"
            f"  valid boolean NOT NULL DEFAULT true,\n"
            f"  {cols}\n)"
        )
    )
    conn.execute(text(f"ALTER SEQUENCE {names.sequence_q} OWNED BY {names.live_q}.id"))
    if schema.bound_points:
        seg_cols = ",\n  ".join(f"{quote(c.name)} {c.sql_type}" for c in schema.segmentation_columns())
        conn.execute(
            text(f"CREATE TABLE {names.segmentation_q} (\n  id bigint PRIMARY KEY,\n  {seg_cols}\n)")
        )
    build_indexes(conn, names, schema)


def drop_tables(conn: Connection, names: TableNames) -> None:
    conn.execute(text(f"DROP TABLE IF EXISTS {names.segmentation_q}"))
    conn.execute(text(f"DROP TABLE IF EXISTS {names.live_q}"))
