"""Read-only views of versions and their tables, as the query engine and the API need them.

A version is answerable when its status is AVAILABLE and it is marked valid; an EXPIRED one
is listed with ``expired=True`` but its tables are gone (HTTP 410).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, or_, select

from matengine.db import metadata as m
from matengine.errors import Gone, NotFound
from matengine.versions import Version

AVAILABLE = "AVAILABLE"
EXPIRED = "EXPIRED"


# one notion of a version everywhere (listing, removal, queries)
VersionInfo = Version


@dataclass(frozen=True)
class VersionTable:
    datastack: str
    version: int
    table_name: str
    schema_type: str
    row_count: int
    voxel_resolution: tuple[float, float, float]
    reference_table: str | None
    description: str


def _version(row: Any) -> VersionInfo:
    return Version.from_row(row)


def list_versions(engine: Engine, datastack: str, *, expired: bool = False) -> list[VersionInfo]:
    """Queryable versions, oldest first; with ``expired`` also the expired ones."""
    v = m.versions
    stmt = select(v).where(v.c.datastack == datastack).order_by(v.c.version)
    if expired:
        stmt = stmt.where(or_(v.c.status == EXPIRED, (v.c.status == AVAILABLE) & v.c.valid))
    else:
        stmt = stmt.where(v.c.status == AVAILABLE, v.c.valid)
    with engine.connect() as conn:
        rows = [_version(r) for r in conn.execute(stmt)]
    return rows if expired else [r for r in rows if not r.expired]


def get_version(engine: Engine, datastack: str, version: int, *, queryable: bool = True) -> VersionInfo:
    v = m.versions
    with engine.connect() as conn:
        row = conn.execute(select(v).where(v.c.datastack == datastack, v.c.version == int(version))).first()
    if row is None:
        raise NotFound(f"datastack {datastack!r} has no version {version}")
    info = _version(row)
    if queryable and not info.queryable:
        if info.expired:
            raise Gone(f"version {version} of {datastack!r} has expired")
        raise NotFound(f"version {version} of {datastack!r} is not available (status {info.status})")
    return info


def _table(row: Any) -> VersionTable:
    return VersionTable(
        row.datastack,
        int(row.version),
        row.table_name,
        row.schema_type,
        int(row.row_count),
        tuple(row.voxel_resolution),
        row.reference_table,
        row.description,
    )


def version_tables(engine: Engine, datastack: str, version: int) -> list[VersionTable]:
    t = m.version_tables
    with engine.connect() as conn:
        rows = conn.execute(
            select(t).where(t.c.datastack == datastack, t.c.version == int(version)).order_by(t.c.table_name)
        ).all()
    return [_table(r) for r in rows]


def version_table(engine: Engine, datastack: str, version: int, table: str) -> VersionTable:
    t = m.version_tables
    with engine.connect() as conn:
        row = conn.execute(
            select(t).where(t.c.datastack == datastack, t.c.version == int(version), t.c.table_name == table)
        ).first()
    if row is None:
        raise NotFound(f"version {version} of {datastack!r} has no table {table!r}")
    return _table(row)


def _queryable_row(engine: Engine, datastack: str, version: int, table: str) -> Any:
    v, t, a = m.versions, m.version_tables, m.annotation_tables
    stmt = (
        select(
            v,
            t.c.table_name,
            t.c.schema_type,
            t.c.row_count,
            t.c.voxel_resolution,
            t.c.reference_table,
            t.c.description,
            a.c.notice_text,
        )
        .select_from(
            v.outerjoin(
                t, (t.c.datastack == v.c.datastack) & (t.c.version == v.c.version) & (t.c.table_name == table)
            ).outerjoin(a, (a.c.datastack == v.c.datastack) & (a.c.table_name == table))
        )
        .where(v.c.datastack == datastack, v.c.version == int(version))
    )
    with engine.connect() as conn:
        return conn.execute(stmt).first()


def queryable_table(
    engine: Engine, datastack: str, version: int, table: str, *, cached: bool = False
) -> tuple[VersionTable, str | None]:
    """The table of a queryable version, and its owner's notice, in one round trip (the
    checks every query makes before its first row). ``cached``: the row through
    :mod:`matengine.metadata_cache`; whether the version has expired is decided at each call."""
    if cached:
        from matengine import metadata_cache

        row = metadata_cache.cached(
            engine,
            ("version_table", datastack, int(version), table),
            lambda: _queryable_row(engine, datastack, version, table),
        )
    else:
        row = _queryable_row(engine, datastack, version, table)
    if row is None:
        raise NotFound(f"datastack {datastack!r} has no version {version}")
    info = _version(row)
    if not info.queryable:
        if info.expired:
            raise Gone(f"version {version} of {datastack!r} has expired")
        raise NotFound(f"version {version} of {datastack!r} is not available (status {info.status})")
    if row.table_name is None:
        raise NotFound(f"version {version} of {datastack!r} has no table {table!r}")
    vt = VersionTable(
        datastack,
        int(version),
        row.table_name,
        row.schema_type,
        int(row.row_count),
        tuple(row.voxel_resolution),
        row.reference_table,
        row.description,
    )
    return vt, row.notice_text
