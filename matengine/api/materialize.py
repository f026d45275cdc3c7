"""Materialization routes (``/materialize/...``), API v2 and v3, as caveclient calls them.

Versions and their tables, table metadata, counts, queries of a version table, and live
queries at any timestamp (``live_live_query``). Every route needs ``view`` on the datastack.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import StreamingResponse

from matengine import catalog
from matengine.api.deps import engine_of, flag, settings_of
from matengine.api.streaming import query_response
from matengine.auth import Principal, require_permission
from matengine.db.identifiers import validate_name
from matengine.errors import InvalidInput, MatengineError, NotFound
from matengine.query import live_query, meta, version_query
from matengine.query.join import join_query
from matengine.timeutil import caveclient_format

MATERIALIZE_VERSION = "5.26.4"
router = APIRouter(tags=["materialize"])
view = Depends(require_permission("view"))


class NotImplementedYet(MatengineError):
    status_code = 501


def version_dict(v: meta.VersionInfo) -> dict[str, Any]:
    return {
        "id": v.version,  # caveclient sorts versions by id; version numbers grow with time
        "datastack": v.datastack,
        "version": v.version,
        "time_stamp": caveclient_format(v.time_stamp),
        "valid": v.valid and not v.expired,
        "expires_on": caveclient_format(v.expires_on),
        "status": "EXPIRED" if v.expired else v.status,
        "is_merged": True,
        "pinned": v.pinned,
    }


def _fmt(value: datetime | None) -> str | None:
    return caveclient_format(value) if value else None


def table_metadata(
    request: Request, datastack: str, table: str, vt: meta.VersionTable | None
) -> dict[str, Any]:
    """The v3 server's table metadata (AnalysisTable ∪ AnnoMetadata ∪ segmentation)."""
    engine = engine_of(request)
    ds = catalog.get_datastack(engine, datastack)
    live = catalog.get_table(engine, datastack, table)
    res = vt.voxel_resolution if vt is not None else live.voxel_resolution
    from sqlalchemy import select

    from matengine.db import metadata as m

    t = m.annotation_tables
    with engine.connect() as conn:
        notice = conn.execute(
            select(t.c.notice_text).where(t.c.datastack == datastack, t.c.table_name == table)
        ).scalar()
    return {
        "id": zlib.crc32(f"{datastack}/{table}".encode()) & 0x7FFFFFFF,
        "aligned_volume": ds.aligned_volume,
        "schema": live.schema_type,
        "schema_type": live.schema_type,
        "table_name": table,
        "annotation_table": table,
        "valid": live.deleted is None,
        "created": _fmt(live.created),
        "user_id": live.owner,
        "description": vt.description if vt is not None else live.description,
        "notice_text": notice,
        "reference_table": vt.reference_table if vt is not None else live.reference_table,
        "flat_segmentation_source": None,
        "voxel_resolution_x": float(res[0]),
        "voxel_resolution_y": float(res[1]),
        "voxel_resolution_z": float(res[2]),
        "write_permission": "PRIVATE",
        "read_permission": "PUBLIC",
        "last_modified": _fmt(live.last_modified),
        "segmentation_source": None,
        "pcg_table_name": ds.pcg_table_name,
        "last_updated": _fmt(live.roots_last_updated),
        "row_count": vt.row_count if vt is not None else None,
    }


def _version_table_or_live(request: Request, ds: str, version: int, table: str) -> meta.VersionTable | None:
    """The version's table, or None when only the live table exists: caveclient's
    live_live_query asks the latest version for the metadata of tables made since."""
    try:
        return meta.version_table(engine_of(request), ds, version, table)
    except NotFound:
        catalog.get_table(engine_of(request), ds, table)
        return None


def add_routes(prefix: str) -> None:
    base = prefix + "/datastack/{datastack_name}"

    @router.get(base + "/versions", dependencies=[view])
    def versions(datastack_name: str, request: Request, expired: str | None = None) -> list[int]:
        catalog.get_datastack(engine_of(request), datastack_name)
        return [
            v.version for v in meta.list_versions(engine_of(request), datastack_name, expired=flag(expired))
        ]

    @router.get(base + "/version/{version}", dependencies=[view])
    def version(datastack_name: str, version: int, request: Request) -> dict[str, Any]:
        return version_dict(meta.get_version(engine_of(request), datastack_name, version, queryable=False))

    @router.get(base + "/metadata", dependencies=[view])
    def versions_metadata(
        datastack_name: str, request: Request, expired: str | None = None
    ) -> list[dict[str, Any]]:
        catalog.get_datastack(engine_of(request), datastack_name)
        out = [
            version_dict(v)
            for v in meta.list_versions(engine_of(request), datastack_name, expired=flag(expired))
        ]
        if not out:
            raise NotFound(f"datastack {datastack_name!r} has no versions")
        return out

    @router.get(base + "/version/{version}/tables", dependencies=[view])
    def tables(datastack_name: str, version: int, request: Request) -> list[str]:
        meta.get_version(engine_of(request), datastack_name, version)
        return [t.table_name for t in meta.version_tables(engine_of(request), datastack_name, version)]

    @router.get(base + "/version/{version}/tables/metadata", dependencies=[view])
    def tables_metadata(datastack_name: str, version: int, request: Request) -> list[dict[str, Any]]:
        meta.get_version(engine_of(request), datastack_name, version)
        return [
            table_metadata(request, datastack_name, t.table_name, t)
            for t in meta.version_tables(engine_of(request), datastack_name, version)
        ]

    @router.get(base + "/version/{version}/table/{table_name}/metadata", dependencies=[view])
    def metadata(datastack_name: str, version: int, table_name: str, request: Request) -> dict[str, Any]:
        meta.get_version(engine_of(request), datastack_name, version)
        vt = _version_table_or_live(request, datastack_name, version, table_name)
        return table_metadata(request, datastack_name, table_name, vt)

    @router.get(base + "/version/{version}/table/{table_name}/count", dependencies=[view])
    def count(datastack_name: str, version: int, table_name: str, request: Request) -> int:
        meta.get_version(engine_of(request), datastack_name, version)
        return meta.version_table(engine_of(request), datastack_name, version, table_name).row_count

    @router.post(base + "/version/{version}/table/{table_name}/query", dependencies=[view])
    def query(
        datastack_name: str,
        version: int,
        table_name: str,
        request: Request,
        body: dict[str, Any] = Body(default_factory=dict),
        return_pyarrow: str | None = None,
        arrow_format: str | None = None,
        ipc_compress: str | None = None,
        random_sample: int | None = None,
        count: str | None = None,
    ) -> StreamingResponse:
        validate_name(table_name, "table name")
        if flag(count):
            raise NotImplementedYet("count=True is not supported; query ids and count them")
        result = version_query(
            engine_of(request),
            datastack_name,
            version,
            table_name,
            body,
            settings=settings_of(request),
            random_sample=random_sample,
        )
        return query_response(
            result, request, arrow=flag(return_pyarrow, True), ipc_compress=flag(ipc_compress, True)
        )

    @router.post(base + "/version/{version}/query", dependencies=[view])
    def join(
        datastack_name: str,
        version: int,
        request: Request,
        body: dict[str, Any] = Body(default_factory=dict),
        return_pyarrow: str | None = None,
        arrow_format: str | None = None,
        ipc_compress: str | None = None,
    ) -> StreamingResponse:
        result = join_query(engine_of(request), datastack_name, version, body, settings=settings_of(request))
        return query_response(
            result, request, arrow=flag(return_pyarrow, True), ipc_compress=flag(ipc_compress, True)
        )

    @router.post(base + "/query")
    def live_live(
        datastack_name: str,
        request: Request,
        body: dict[str, Any] = Body(default_factory=dict),
        principal: Principal = view,
        return_pyarrow: str | None = None,
        arrow_format: str | None = None,
        ipc_compress: str | None = None,
        random_sample: int | None = None,
        allow_missing_lookups: str | None = None,
        allow_invalid_root_ids: str | None = None,
    ) -> StreamingResponse:
        table = body.get("table")
        if not isinstance(table, str):
            raise InvalidInput("name the table to query", field="table")
        validate_name(table, "table name")
        if body.get("join_tables"):
            raise NotImplementedYet("joins are not supported in live queries yet")
        if "timestamp" not in body:
            raise InvalidInput("give the timestamp to query at", field="timestamp")
        result = live_query(
            engine_of(request),
            datastack_name,
            table,
            body["timestamp"],
            body,
            settings=settings_of(request),
            random_sample=random_sample,
            allow_missing_lookups=flag(allow_missing_lookups),
            allow_invalid_root_ids=flag(allow_invalid_root_ids),
        )
        return query_response(
            result, request, arrow=flag(return_pyarrow, True), ipc_compress=flag(ipc_compress, True)
        )


@router.get("/materialize/version")
def materialize_version() -> str:
    return MATERIALIZE_VERSION


@router.get("/materialize/api/versions")
def materialize_api_versions() -> list[int]:
    return [2, 3]


add_routes("/materialize/api/v2")
add_routes("/materialize/api/v3")
