"""Datastacks and their annotation tables: create, list, look up.

This is the Python API behind ``matengine datastack …`` and ``matengine table …`` and the
annotation routes' table management.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from matengine.db import metadata as m
from matengine.db.annotation_tables import TableNames, create_tables
from matengine.db.identifiers import validate_datastack_name, validate_name
from matengine.errors import AlreadyExists, InvalidInput, NotFound
from matengine.permission_levels import check_table_permission
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
    info: dict[str, Any] = field(default_factory=dict)
    live_schedule: str | None = None

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
    read_permission: str = "PUBLIC"
    write_permission: str = "PUBLIC"
    notice_text: str | None = None
    flat_segmentation_source: str | None = None

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
        info=dict(row.info or {}),
        live_schedule=row.live_schedule,
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


def set_live_schedule(engine: Engine, name: str, schedule: str | None) -> Datastack:
    """The crontab of the periodic ``sync_live`` run (ingest + update-roots, no version)."""
    get_datastack(engine, name)
    with engine.begin() as conn:
        conn.execute(update(m.datastacks).where(m.datastacks.c.name == name).values(live_schedule=schedule))
    return get_datastack(engine, name)


# what a datastack's info carries for Neuroglancer and caveclient's info client
INFO_FIELDS = ("image_source", "viewer_site", "skeleton_source", "synapse_table", "soma_table")
_MAX_INFO_VALUE = 2048


def set_datastack_info(
    engine: Engine, name: str, *, description: str | None = None, **fields: str | None
) -> Datastack:
    """Set (a value) or clear (``""``) info fields; ``None`` leaves a field as it is."""
    ds = get_datastack(engine, name)
    unknown = sorted(set(fields) - set(INFO_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown info field {unknown[0]!r}; known: {', '.join(INFO_FIELDS)}", field=unknown[0]
        )
    info = dict(ds.info)
    for key, value in fields.items():
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > _MAX_INFO_VALUE:
            raise InvalidInput(f"{key} must be a string of at most {_MAX_INFO_VALUE} characters", field=key)
        if key in ("synapse_table", "soma_table") and value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", value):  # (not echoed back)
                raise InvalidInput(f"{key} must be a table name: lowercase letters, digits and _", field=key)
        elif key in ("image_source", "skeleton_source") and value and "://" not in value:
            raise InvalidInput(f"{key} must be a URL (precomputed://…, gs://…, https://…)", field=key)
        elif key == "viewer_site" and value and not value.startswith(("http://", "https://")):
            raise InvalidInput("viewer_site must be an http(s) URL", field=key)
        if value:
            info[key] = value
        else:
            info.pop(key, None)
    values: dict[str, Any] = {"info": info}
    if description is not None:
        if not isinstance(description, str) or len(description) > 10_000:
            raise InvalidInput(
                "description must be a string of at most 10,000 characters", field="description"
            )
        values["description"] = description
    with engine.begin() as conn:
        conn.execute(update(m.datastacks).where(m.datastacks.c.name == name).values(**values))
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
    read_permission: str = "PUBLIC",
    write_permission: str = "PUBLIC",
    flat_segmentation_source: str | None = None,
) -> AnnotationTable:
    """Create a live table (and its segmentation table). Tables made by operators (the CLI)
    default to PUBLIC read and write; caveclient sends its own defaults (PUBLIC/PRIVATE)."""
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
                    read_permission=_permission(read_permission, "read_permission"),
                    write_permission=_permission(write_permission, "write_permission"),
                    flat_segmentation_source=flat_segmentation_source,
                )
            )
            create_tables(conn, names, schema_obj)
    except IntegrityError:
        raise AlreadyExists(f"table {table_name!r} already exists in {datastack!r}") from None
    return get_table(engine, datastack, table_name)


def _permission(value: Any, field: str) -> str:
    return check_table_permission(value, field).value


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
        read_permission=row.read_permission,
        write_permission=row.write_permission,
        notice_text=row.notice_text,
        flat_segmentation_source=row.flat_segmentation_source,
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


def delete_table(engine: Engine, datastack: str, table_name: str) -> AnnotationTable:
    """Soft-delete a table, as the field does: it leaves listings, annotation routes and new
    versions; its rows stay, and versions made before keep it."""
    table = get_table(engine, datastack, table_name)
    if table.deleted is not None:
        raise NotFound(f"table {table_name!r} in {datastack!r} was deleted already")
    with engine.begin() as conn:
        _update_table_row(conn, table, deleted=utcnow(), last_modified=utcnow())
    return get_table(engine, datastack, table_name)


# what update_table_metadata may change, as the field's UpdateMetadataSchema (plus resolution)
UPDATABLE = (
    "description",
    "notice_text",
    "read_permission",
    "write_permission",
    "flat_segmentation_source",
    "voxel_resolution",
)


def update_table_metadata(engine: Engine, datastack: str, table_name: str, **changes: Any) -> AnnotationTable:
    """Change a table's description, notice text, permissions, flat segmentation source, or
    its voxel resolution while it holds no rows (positions are stored in that resolution)."""
    table = get_table(engine, datastack, table_name)
    if table.deleted is not None:
        raise NotFound(f"table {table_name!r} in {datastack!r} was deleted")
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidInput(
            f"cannot change {unknown[0]!r}; changeable: {', '.join(UPDATABLE)}", field=unknown[0]
        )
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key in ("read_permission", "write_permission"):
            values[key] = _permission(value, key)
        elif key == "voxel_resolution":
            values[key] = list(_resolution(value))
        elif key in ("description",):
            if not isinstance(value, str):
                raise InvalidInput(f"{key} must be a string", field=key)
            values[key] = value
        else:
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{key} must be a string or null", field=key)
            values[key] = value
    if not values:
        return table
    with engine.begin() as conn:
        if "voxel_resolution" in values:
            from sqlalchemy import text

            has_rows = conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table.names.live_q})")).scalar_one()
            if has_rows and values["voxel_resolution"] != list(table.voxel_resolution):
                raise InvalidInput(
                    f"table {table_name!r} holds rows in resolution {list(table.voxel_resolution)}; "
                    "its voxel resolution can change only while it is empty",
                    field="voxel_resolution",
                )
        _update_table_row(conn, table, **values, last_modified=utcnow())
    return get_table(engine, datastack, table_name)


def set_roots_last_updated(conn: Connection, table: AnnotationTable, when: datetime) -> None:
    """Every root in the table is now valid at ``when`` (and no update is half-done)."""
    _update_table_row(conn, table, roots_last_updated=when, roots_updating_to=None)


def set_roots_updating_to(conn: Connection, table: AnnotationTable, when: datetime) -> None:
    _update_table_row(conn, table, roots_updating_to=when)


def touch_table(conn: Connection, table: AnnotationTable) -> None:
    _update_table_row(conn, table, last_modified=utcnow())


def drop_datastack(engine: Engine, name: str) -> None:
    """Drop a datastack: its live schema, every version schema, its version store, and its
    metadata rows."""
    from sqlalchemy import delete, text

    from matengine.db.identifiers import quote, store_schema, version_schema

    get_datastack(engine, name)
    with engine.begin() as conn:
        numbers = (
            conn.execute(select(m.versions.c.version).where(m.versions.c.datastack == name)).scalars().all()
        )
        for n in numbers:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(version_schema(name, n))} CASCADE"))
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE"))
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(store_schema(name))} CASCADE"))
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
            _sync_declared_info(engine, name, d)
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
        _sync_declared_info(engine, name, d)
    return created


def _sync_declared_info(engine: Engine, name: str, d: Any) -> None:
    """The config's live schedule and info fields (those it names; others stay as set)."""
    fields = {k: getattr(d, k, None) for k in INFO_FIELDS}
    if any(v is not None for v in fields.values()):
        set_datastack_info(engine, name, **fields)
    if getattr(d, "live_schedule", None) is not None:
        set_live_schedule(engine, name, d.live_schedule)
