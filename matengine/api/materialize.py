"""Materialization routes (``/materialize/...``), API v2 and v3, as caveclient calls them.

Versions and their tables, table metadata, counts, queries of a version table, and live
queries at any timestamp (``live_live_query``). Every route needs ``view`` on the datastack.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import StreamingResponse

from matengine import catalog, table_permissions
from matengine.api.deps import engine_of, flag, settings_of
from matengine.api.streaming import query_response
from matengine.auth import Principal, principal_from_request, require_permission
from matengine.db.identifiers import validate_name
from matengine.errors import InvalidInput, NotFound
from matengine.query import live_query, meta, version_query
from matengine.query.counts import unique_string_values
from matengine.query.engine import QueryResult
from matengine.query.join import join_query
from matengine.query.live_join import live_join_query
from matengine.timeutil import caveclient_format

MATERIALIZE_VERSION = "5.26.4"
router = APIRouter(tags=["materialize"])
view = Depends(require_permission("view"))


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
        "notice_text": live.notice_text,
        "reference_table": vt.reference_table if vt is not None else live.reference_table,
        "flat_segmentation_source": live.flat_segmentation_source,
        "voxel_resolution_x": float(res[0]),
        "voxel_resolution_y": float(res[1]),
        "voxel_resolution_z": float(res[2]),
        "write_permission": live.write_permission,
        "read_permission": live.read_permission,
        "last_modified": _fmt(live.last_modified),
        "segmentation_source": None,
        "pcg_table_name": ds.pcg_table_name,
        "last_updated": _fmt(live.roots_last_updated),
        "row_count": vt.row_count if vt is not None else None,
    }


def _readable(request: Request, datastack: str, table: str) -> None:
    """Refuse (403) a table whose read permission the caller does not meet."""
    table_permissions.require(
        engine_of(request),
        principal_from_request(request),
        datastack,
        table,
        table_permissions.Access.READ,
        cached=True,
    )


def _may_read(request: Request, datastack: str, table: str) -> bool:
    engine = engine_of(request)
    try:
        live = catalog.get_table(engine, datastack, table)
    except NotFound:
        return True
    return table_permissions.allows(
        engine, principal_from_request(request), live, table_permissions.Access.READ
    )


def _answer(
    result: QueryResult | Callable[[], QueryResult],
    request: Request,
    count: str | None,
    return_pyarrow: str | None,
    ipc_compress: str | None,
) -> StreamingResponse:
    """The one way a query route answers: its row count (``count=true``) or its rows."""
    return query_response(
        result,
        request,
        arrow=flag(return_pyarrow, True),
        ipc_compress=flag(ipc_compress, True),
        count=flag(count),
    )


def _live_join_tables(body: dict[str, Any], reference: str | None) -> list[str]:
    """Table names of a live join (``join_tables: [[t1, c1, t2, c2]]``) and of a merged reference."""
    out = [reference] if reference else []
    for item in body.get("join_tables") or []:
        if isinstance(item, list | tuple):
            out += [v for v in item[0::2] if isinstance(v, str)]
    return out


def _join_tables(body: dict[str, Any]) -> list[str]:
    """Table names of a join body (``tables: [[table, column], …]``), for the permission check."""
    out = []
    for item in body.get("tables") or []:
        if isinstance(item, list | tuple) and item and isinstance(item[0], str):
            out.append(item[0])
    return out


def view_metadata(request: Request, v: Any, version: int) -> dict[str, Any]:
    """What MaterializationEngine says of a view (caveclient reads description,
    live_compatible and the voxel resolution)."""
    engine = engine_of(request)
    first = catalog.get_table(engine, v.datastack, v.tables[0])
    res = first.voxel_resolution
    return {
        "id": zlib.crc32(f"{v.datastack}/view/{v.name}".encode()) & 0x7FFFFFFF,
        "table_name": v.name,
        "datastack_name": v.datastack,
        "version": version,
        "description": v.description,
        "notice_text": None,
        "live_compatible": True,
        "tables": v.tables,
        "created": _fmt(v.created),
        "voxel_resolution_x": float(res[0]),
        "voxel_resolution_y": float(res[1]),
        "voxel_resolution_z": float(res[2]),
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
        return [
            t.table_name
            for t in meta.version_tables(engine_of(request), datastack_name, version)
            if _may_read(request, datastack_name, t.table_name)
        ]

    @router.get(base + "/version/{version}/tables/metadata", dependencies=[view])
    def tables_metadata(datastack_name: str, version: int, request: Request) -> list[dict[str, Any]]:
        meta.get_version(engine_of(request), datastack_name, version)
        return [
            table_metadata(request, datastack_name, t.table_name, t)
            for t in meta.version_tables(engine_of(request), datastack_name, version)
            if _may_read(request, datastack_name, t.table_name)
        ]

    @router.get(base + "/version/{version}/table/{table_name}/metadata", dependencies=[view])
    def metadata(datastack_name: str, version: int, table_name: str, request: Request) -> dict[str, Any]:
        meta.get_version(engine_of(request), datastack_name, version)
        vt = _version_table_or_live(request, datastack_name, version, table_name)
        _readable(request, datastack_name, table_name)
        return table_metadata(request, datastack_name, table_name, vt)

    @router.get(base + "/version/{version}/table/{table_name}/count", dependencies=[view])
    def count(datastack_name: str, version: int, table_name: str, request: Request) -> int:
        meta.get_version(engine_of(request), datastack_name, version)
        row_count = meta.version_table(engine_of(request), datastack_name, version, table_name).row_count
        _readable(request, datastack_name, table_name)
        return row_count

    @router.post(base + "/version/{version}/table/{table_name}/query", dependencies=[view])
    async def query(
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
        # async: the checks and the plan run on the answer's one trip to a worker thread
        def make() -> QueryResult:
            validate_name(table_name, "table name")
            _readable(request, datastack_name, table_name)
            return version_query(
                engine_of(request),
                datastack_name,
                version,
                table_name,
                body,
                settings=settings_of(request),
                random_sample=random_sample,
                cached=True,
            )

        return _answer(make, request, count, return_pyarrow, ipc_compress)

    @router.get(base + "/table/{table_name}/unique_string_values", dependencies=[view])
    def unique_values(datastack_name: str, table_name: str, request: Request) -> dict[str, list[str]]:
        validate_name(table_name, "table name")
        _readable(request, datastack_name, table_name)
        return unique_string_values(engine_of(request), datastack_name, table_name)

    def _view_at(request: Request, datastack_name: str, version: int, view_name: str):
        from matengine.views import get_view

        validate_name(view_name, "view name")
        info = meta.get_version(engine_of(request), datastack_name, version)
        found = get_view(engine_of(request), datastack_name, view_name, at=info.created)
        for name in found.tables:  # a view shows its tables' rows: their read permissions hold
            _readable(request, datastack_name, name)
        return found

    def _readable_views(request: Request, datastack_name: str, listed: list[Any]) -> list[Any]:
        return [v for v in listed if all(_may_read(request, datastack_name, t) for t in v.tables)]

    @router.get(base + "/version/{version}/views", dependencies=[view])
    def views(datastack_name: str, version: int, request: Request) -> dict[str, dict[str, Any]]:
        from matengine.views import list_views

        info = meta.get_version(engine_of(request), datastack_name, version)
        listed = _readable_views(
            request, datastack_name, list_views(engine_of(request), datastack_name, at=info.created)
        )
        return {v.name: view_metadata(request, v, version) for v in listed}

    @router.get(base + "/version/{version}/views/schemas", dependencies=[view])
    def view_schemas(datastack_name: str, version: int, request: Request) -> dict[str, Any]:
        from matengine.query.views import view_schema
        from matengine.views import list_views

        info = meta.get_version(engine_of(request), datastack_name, version)
        listed = _readable_views(
            request, datastack_name, list_views(engine_of(request), datastack_name, at=info.created)
        )
        return {v.name: view_schema(engine_of(request), v) for v in listed}

    @router.get(base + "/version/{version}/views/{view_name}/metadata", dependencies=[view])
    def view_meta(datastack_name: str, version: int, view_name: str, request: Request) -> dict[str, Any]:
        return view_metadata(request, _view_at(request, datastack_name, version, view_name), version)

    @router.get(base + "/version/{version}/views/{view_name}/schema", dependencies=[view])
    def view_schema_route(datastack_name: str, version: int, view_name: str, request: Request) -> dict:
        from matengine.query.views import view_schema

        return view_schema(engine_of(request), _view_at(request, datastack_name, version, view_name))

    @router.post(base + "/version/{version}/views/{view_name}/query", dependencies=[view])
    def view_query_route(
        datastack_name: str,
        version: int,
        view_name: str,
        request: Request,
        body: dict[str, Any] = Body(default_factory=dict),
        return_pyarrow: str | None = None,
        ipc_compress: str | None = None,
        count: str | None = None,
    ) -> StreamingResponse:
        from matengine.query.views import view_query

        found = _view_at(request, datastack_name, version, view_name)
        result = view_query(engine_of(request), found, body, version=version, settings=settings_of(request))
        return _answer(result, request, count, return_pyarrow, ipc_compress)

    @router.post(base + "/views/{view_name}/query", dependencies=[view])
    def view_live_query_route(
        datastack_name: str,
        view_name: str,
        request: Request,
        body: dict[str, Any] = Body(default_factory=dict),
        return_pyarrow: str | None = None,
        ipc_compress: str | None = None,
        count: str | None = None,
        allow_missing_lookups: str | None = None,
        allow_invalid_root_ids: str | None = None,
    ) -> StreamingResponse:
        """A view live at ``body["timestamp"]`` (its current definition)."""
        from matengine.query.views import view_query
        from matengine.views import get_view

        validate_name(view_name, "view name")
        if "timestamp" not in body:
            raise InvalidInput("give the timestamp to query at", field="timestamp")
        found = get_view(engine_of(request), datastack_name, view_name)
        for name in found.tables:
            _readable(request, datastack_name, name)
        result = view_query(
            engine_of(request),
            found,
            {k: v for k, v in body.items() if k != "timestamp"},
            timestamp=body["timestamp"],
            settings=settings_of(request),
            allow_missing_lookups=flag(allow_missing_lookups),
            allow_invalid_root_ids=flag(allow_invalid_root_ids),
        )
        return _answer(result, request, count, return_pyarrow, ipc_compress)

    @router.get(base + "/table/{table_name}/root_counts", dependencies=[view])
    def root_counts_route(
        datastack_name: str,
        table_name: str,
        request: Request,
        version: int | None = None,
        timestamp: str | None = None,
        side: str = "pre",
        top: int | None = 1000,
    ) -> dict[str, list[int]]:
        """Synapses per pre (or post) root at a version or at ``timestamp``, largest first."""
        from matengine.query.aggregates import root_counts

        validate_name(table_name, "table name")
        return root_counts(
            engine_of(request),
            datastack_name,
            table_name,
            version=version,
            timestamp=timestamp,
            side=side,
            top=top,
            settings=settings_of(request),
        ).to_dict()

    @router.post(base + "/table/{table_name}/partners", dependencies=[view])
    def partners_route(
        datastack_name: str,
        table_name: str,
        request: Request,
        body: dict[str, Any] = Body(default_factory=dict),
    ) -> dict[str, list[int]]:
        """``{"root_ids": [...], "version": V | "timestamp": T, "direction": "out"|"in"}`` ->
        the (pre root, post root, synapses) table of those roots."""
        from matengine.query.aggregates import partners

        validate_name(table_name, "table name")
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidInput("version is an integer", field="version")
        return partners(
            engine_of(request),
            datastack_name,
            table_name,
            body.get("root_ids"),
            version=version,
            timestamp=body.get("timestamp"),
            direction=str(body.get("direction", "out")),
            settings=settings_of(request),
        ).to_dict()

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
        for name in _join_tables(body):
            validate_name(name, "table name")
            _readable(request, datastack_name, name)
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
        count: str | None = None,
        merge_reference: str | None = None,
    ) -> StreamingResponse:
        table = body.get("table")
        if not isinstance(table, str):
            raise InvalidInput("name the table to query", field="table")
        validate_name(table, "table name")
        _readable(request, datastack_name, table)
        if "timestamp" not in body:
            raise InvalidInput("give the timestamp to query at", field="timestamp")
        result: QueryResult
        reference = catalog.get_table(engine_of(request), datastack_name, table).reference_table
        if body.get("join_tables") or (flag(merge_reference) and reference):
            # every table the join reads must be readable by the caller, as in version joins
            for name in _live_join_tables(body, reference if flag(merge_reference) else None):
                validate_name(name, "table name")
                _readable(request, datastack_name, name)
            result = live_join_query(
                engine_of(request),
                datastack_name,
                table,
                body["timestamp"],
                body,
                merge_reference=flag(merge_reference),
                settings=settings_of(request),
                allow_missing_lookups=flag(allow_missing_lookups),
                allow_invalid_root_ids=flag(allow_invalid_root_ids),
            )
            return _answer(result, request, count, return_pyarrow, ipc_compress)
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
        return _answer(result, request, count, return_pyarrow, ipc_compress)


@router.get("/materialize/version")
def materialize_version() -> str:
    return MATERIALIZE_VERSION


@router.get("/materialize/api/versions")
def materialize_api_versions() -> list[int]:
    return [2, 3]


add_routes("/materialize/api/v2")
add_routes("/materialize/api/v3")


# caveclient's lookup_supervoxel_ids / ingest_annotation_table (the field's "run" routes: edit on
# the datastack and write on the table; both answer 200)
_run = "/materialize/api/v2/materialize/run"


def _writable(request: Request, datastack: str, table: str) -> Principal:
    principal = principal_from_request(request)
    principal.require(datastack, "edit")
    validate_name(table, "table name")
    table_permissions.require(engine_of(request), principal, datastack, table, table_permissions.Access.WRITE)
    return principal


@router.post(_run + "/lookup_svid/datastack/{datastack_name}/{table_name}")
def lookup_supervoxel_ids(
    datastack_name: str, table_name: str, request: Request, body: dict[str, Any] = Body(default_factory=dict)
) -> int:
    """Look up the given rows' supervoxels and roots now (at most 10,000 ids); without ids,
    start an ingest run of the table."""
    from matengine.immediate_lookup import MAX_IN_REQUEST, lookup_after_post, trigger_ingest

    _writable(request, datastack_name, table_name)
    ids = body.get("annotation_ids")
    if ids is None:
        trigger_ingest(engine_of(request), datastack_name, table_name)
        return 200
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidInput("expected a list of integer ids", field="annotation_ids")
    if len(ids) > MAX_IN_REQUEST:
        raise InvalidInput(f"at most {MAX_IN_REQUEST} annotation_ids per request", field="annotation_ids")
    lookup_after_post(engine_of(request), datastack_name, table_name, ids)
    return 200


@router.post(_run + "/ingest_annotations/datastack/{datastack_name}/{table_name}")
def ingest_annotation_table(datastack_name: str, table_name: str, request: Request) -> int:
    """Start an ingest run of the table (none if one is running already: it takes the rows)."""
    from matengine.immediate_lookup import trigger_ingest

    _writable(request, datastack_name, table_name)
    trigger_ingest(engine_of(request), datastack_name, table_name)
    return 200
