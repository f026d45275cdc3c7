"""Datastacks and their annotation tables: create, list, look up.

This is the Python API behind ``matengine datastack …`` and ``matengine table …`` and the
annotation routes' table management.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from matengine.db import metadata as m
from matengine.db.annotation_tables import TableNames, create_tables
from matengine.db.identifiers import validate_datastack_name, validate_name
from matengine.errors import AlreadyExists, InvalidInput, NotFound
from matengine.schemas import AnnotationSchema, get_schema
from matengine.timeutil import utcnow


@dataclass(frozen=True)
class Datastack:
    name: str
    aligned_volume: str
    segmentation_source: str
    voxel_resolution: tuple[float, float, float]
    description: str
    schedule: str | None
    days_to_expire: int | None
    created: datetime

    @property
    def pcg_table_name(self) -> str:
        """The segmentation's table name: last path component of the source, as an identifier."""
        last = self.segmentation_source.rstrip("/").rsplit("/", 1)[-1].lower()
        cleaned = re.sub(r"[^a-z0-9_]", "_", last).strip("_") or "seg"
        return cleaned if cleaned[0].isalpha() else f"s_{cleaned}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created"] = self.created.isoformat()
        d["voxel_resolution"] = list(self.voxel_resolution)
        return d


@dataclass(frozen=True)
class AnnotationTable:
    datastack: str
    table_name: str
    schema_type: str
    description: str
    voxel_resolution: tuple[float, float, float]
    reference_table: str | None
    owner: str
    created: datetime
    deleted: datetime | None
    last_modified: datetime
    roots_last_updated: datetime | None
    segmentation_suffix: str
    roots_updating_to: datetime | None = None

    @property
    def schema(self) -> AnnotationSchema:
        return get_schema(self.schema_type)

    @property
    def names(self) -> TableNames:
        return TableNames(self.datastack, self.table_name, self.segmentation_suffix)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("created", "deleted", "last_modified", "roots_last_updated", "roots_updating_to"):
            d[key] = d[key].isoformat() if d[key] else None
        d["voxel_resolution"] = list(self.voxel_resolution)
        d.pop("segmentation_suffix")
        return d


def _resolution(value: Any) -> tuple[float, float, float]:
    try:
        res = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        res = ()
    # inf would reach the dashboard's JSON as the invalid literal Infinity
    if len(res) != 3 or any(not (0 < v < math.inf) for v in res):
        raise InvalidInput(f"voxel resolution must be three finite positive numbers, got {value!r}")
    return (res[0], res[1], res[2])


MAX_NOTICE = 2048


def check_header_text(value: Any, field: str) -> str:
    """Text that is sent in an HTTP header (a table's notice travels in ``Warning``): one
    line of printable characters, bounded. A CR or LF would end the header early."""
    if not isinstance(value, str):
        raise InvalidInput("expected a string", field=field)
    if len(value) > MAX_NOTICE:
        raise InvalidInput(f"longer than {MAX_NOTICE} characters", field=field)
    if any(c in value for c in "\r\n") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput("must be one line without control characters (no CR/LF)", field=field)
    return value


def add_datastack(
    engine: Engine,
    name: str,
    *,
    segmentation_source: str,
    voxel_resolution: Any,
    aligned_volume: str | None = None,
    description: str = "",
    schedule: str | None = None,
    days_to_expire: int | None = None,
) -> Datastack:
    validate_datastack_name(name)
    res = _resolution(voxel_resolution)
    if "://" not in segmentation_source:
        raise InvalidInput(
            f"segmentation source {segmentation_source!r} is not a URL "
            "(graphene://…, local://…, precomputed://…)"
        )
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(m.datastacks).values(
                    name=name,
                    aligned_volume=aligned_volume or name,
                    segmentation_source=segmentation_source,
                    voxel_resolution=list(res),
                    description=description,
                    schedule=schedule,
                    days_to_expire=days_to_expire,
                )
            )
    except IntegrityError:
        raise AlreadyExists(f"datastack {name!r} already exists") from None
    return get_datastack(engine, name)


def _datastack(row: Any) -> Datastack:
    return Datastack(
        name=row.name,
        aligned_volume=row.aligned_volume,
        segmentation_source=row.segmentation_source,
        voxel_resolution=tuple(row.voxel_resolution),
        description=row.description,
        schedule=row.schedule,
        days_to_expire=row.days_to_expire,
        created=row.created,
    )


def get_datastack(engine_or_conn: Engine | Connection, name: str) -> Datastack:
    stmt = select(m.datastacks).where(m.datastacks.c.name == name)
    row = _fetch_one(engine_or_conn, stmt)
    if row is None:
        raise NotFound(f"unknown datastack {name!r}")
    return _datastack(row)


def list_datastacks(engine: Engine) -> list[Datastack]:
    with engine.connect() as conn:
        rows = conn.execute(select(m.datastacks).order_by(m.datastacks.c.name)).all()
    return [_datastack(r) for r in rows]


def set_schedule(engine: Engine, name: str, schedule: str | None) -> Datastack:
    get_datastack(engine, name)
    with engine.begin() as conn:
        conn.execute(update(m.datastacks).where(m.datastacks.c.name == name).values(schedule=schedule))
    return get_datastack(engine, name)


def _fetch_one(engine_or_conn: Engine | Connection, stmt: Any) -> Any:
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return conn.execute(stmt).first()
    return engine_or_conn.execute(stmt).first()


def create_table(
    engine: Engine,
    datastack: str,
    table_name: str,
    *,
    schema: str,
    voxel_resolution: Any = None,
    description: str = "",
    reference_table: str | None = None,
    owner: str = "matengine",
    notice_text: str | None = None,
) -> AnnotationTable:
    ds = get_datastack(engine, datastack)
    validate_name(table_name, "table name")
    if notice_text is not None:
        check_header_text(notice_text, "notice_text")
    if not isinstance(description, str) or len(description) > 65_536 or "\x00" in description:
        raise InvalidInput("a string of at most 65536 characters without NUL", field="description")
    schema_obj = get_schema(schema)
    res = _resolution(voxel_resolution) if voxel_resolution is not None else ds.voxel_resolution
    if schema_obj.is_reference:
        if not reference_table:
            raise InvalidInput(f"schema {schema!r} needs a reference_table")
        if reference_table == table_name:
            raise InvalidInput("a table cannot reference itself")
        get_table(engine, datastack, reference_table)
    elif reference_table:
        raise InvalidInput(f"schema {schema!r} is not a reference schema")
    names = TableNames(datastack, table_name, ds.pcg_table_name)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(m.annotation_tables).values(
                    datastack=datastack,
                    table_name=table_name,
                    schema_type=schema,
                    description=description,
                    voxel_resolution=list(res),
                    reference_table=reference_table,
                    owner=owner,
                    notice_text=notice_text,
                )
            )
            create_tables(conn, names, schema_obj)
    except IntegrityError:
        raise AlreadyExists(f"table {table_name!r} already exists in {datastack!r}") from None
    return get_table(engine, datastack, table_name)


def _table(row: Any, suffix: str) -> AnnotationTable:
    return AnnotationTable(
        datastack=row.datastack,
        table_name=row.table_name,
        schema_type=row.schema_type,
        description=row.description,
        voxel_resolution=tuple(row.voxel_resolution),
        reference_table=row.reference_table,
        owner=row.owner,
        created=row.created,
        deleted=row.deleted,
        last_modified=row.last_modified,
        roots_last_updated=row.roots_last_updated,
        segmentation_suffix=suffix,
        roots_updating_to=row.roots_updating_to,
    )


def get_table(engine_or_conn: Engine | Connection, datastack: str, table_name: str) -> AnnotationTable:
    ds = get_datastack(engine_or_conn, datastack)
    t = m.annotation_tables
    row = _fetch_one(
        engine_or_conn,
        select(t).where(t.c.datastack == datastack, t.c.table_name == table_name),
    )
    if row is None:
        raise NotFound(f"unknown table {table_name!r} in datastack {datastack!r}")
    return _table(row, ds.pcg_table_name)


def list_tables(engine: Engine, datastack: str) -> list[AnnotationTable]:
    ds = get_datastack(engine, datastack)
    t = m.annotation_tables
    with engine.connect() as conn:
        rows = conn.execute(
            select(t).where(t.c.datastack == datastack, t.c.deleted.is_(None)).order_by(t.c.table_name)
        ).all()
    return [_table(r, ds.pcg_table_name) for r in rows]


def _update_table_row(conn: Connection, table: AnnotationTable, **values: Any) -> None:
    t = m.annotation_tables
    conn.execute(
        update(t).where(t.c.datastack == table.datastack, t.c.table_name == table.table_name).values(**values)
    )


def set_roots_last_updated(conn: Connection, table: AnnotationTable, when: datetime) -> None:
    """Every root in the table is now valid at ``when`` (and no update is half-done)."""
    _update_table_row(conn, table, roots_last_updated=when, roots_updating_to=None)


def set_roots_updating_to(conn: Connection, table: AnnotationTable, when: datetime) -> None:
    _update_table_row(conn, table, roots_updating_to=when)


def touch_table(conn: Connection, table: AnnotationTable) -> None:
    _update_table_row(conn, table, last_modified=utcnow())


def drop_datastack(engine: Engine, name: str) -> None:
    """Drop a datastack: its live schema, every version schema, and its metadata rows."""
    from sqlalchemy import delete, text

    from matengine.db.identifiers import quote, version_schema

    get_datastack(engine, name)
    with engine.begin() as conn:
        numbers = (
            conn.execute(select(m.versions.c.version).where(m.versions.c.datastack == name)).scalars().all()
        )
        for n in numbers:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(version_schema(name, n))} CASCADE"))
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE"))
        conn.execute(delete(m.version_tables).where(m.version_tables.c.datastack == name))
        conn.execute(delete(m.datastacks).where(m.datastacks.c.name == name))


def sync_declared_datastacks(engine: Engine, declared: dict[str, Any]) -> list[str]:
    """Create the datastacks declared in the TOML config (``MATENGINE_CONFIG``) that do not
    exist yet, and bring the schedule and expiry of declared ones to what the file says.
    Returns the names created."""
    created = []
    for name, d in declared.items():
        try:
            existing = get_datastack(engine, name)
        except NotFound:
            add_datastack(
                engine,
                name,
                segmentation_source=d.segmentation_source,
                voxel_resolution=d.voxel_resolution,
                aligned_volume=d.aligned_volume,
                description=d.description,
                schedule=d.schedule,
                days_to_expire=d.days_to_expire,
            )
            created.append(name)
            continue
        if existing.segmentation_source != d.segmentation_source:
            raise InvalidInput(
                f"datastack {name!r} exists with segmentation source "
                f"{existing.segmentation_source!r}, the config says "
                f"{d.segmentation_source!r}"
            )
        with engine.begin() as conn:
            conn.execute(
                update(m.datastacks)
                .where(m.datastacks.c.name == name)
                .values(schedule=d.schedule, days_to_expire=d.days_to_expire)
            )
    return created
