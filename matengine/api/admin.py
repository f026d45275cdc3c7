"""Admin routes: start each workflow (202 + run id), read runs, versions, schedules.

Every route needs the ``admin`` permission on its datastack (a run's datastack for run routes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from matengine import catalog
from matengine.api.deps import engine_of, settings_of
from matengine.auth import Forbidden, Principal, get_principal, require_permission
from matengine.versions import list_versions, remove_expired, set_pinned
from matengine.workflows import runs
from matengine.workflows.bulk_upload import UploadParams
from matengine.workflows.params import SyncParams
from matengine.workflows.submit import submit, submit_params

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
ADMIN = Depends(require_permission("admin"))


class PinRequest(BaseModel):
    pinned: bool

    model_config = {"extra": "forbid"}


class UploadRequest(BaseModel):
    table: str = Field(max_length=63)
    schema_type: str = Field(alias="schema", max_length=100)
    source: str = Field(max_length=2048)
    column_mapping: dict[str, Any] = Field(max_length=200)
    roots_timestamp: str | None = None
    voxel_resolution: list[float] | None = None
    created: str | None = None
    chunk_rows: int | None = Field(default=None, ge=1)
    description: str = Field(default="", max_length=65_536)

    model_config = {"populate_by_name": True}


class SyncRequest(BaseModel):
    table: str | None = None
    timestamp: str | None = None
    days_to_expire: int | None = None
    chunk_rows: int | None = Field(default=None, ge=1)


class ExportRequest(BaseModel):
    version: int
    to: str = Field(max_length=1024)
    format: str = "parquet"
    tables: list[str] | None = Field(default=None, max_length=1000)
    chunk_rows: int | None = Field(default=None, ge=1)
    neuroglancer: bool = False
    order: str = "root"


class DatastackRequest(BaseModel):
    name: str = Field(max_length=63)
    segmentation_source: str = Field(max_length=2048)
    voxel_resolution: list[float] = Field(min_length=3, max_length=3)
    aligned_volume: str | None = Field(default=None, max_length=63)
    description: str = Field(default="", max_length=65_536)


class ScheduleRequest(BaseModel):
    schedule: str | None = Field(default=None, max_length=200)


def _accepted(run_id: int, request: Request) -> JSONResponse:
    url = str(request.url_for("get_run", run_id=run_id))
    return JSONResponse({"run_id": run_id, "url": url}, status_code=202, headers={"Location": url})


@router.post("/datastack/{datastack}/bulk_upload", status_code=202, dependencies=[ADMIN])
def bulk_upload(datastack: str, body: UploadRequest, request: Request) -> JSONResponse:
    engine, settings = engine_of(request), settings_of(request)
    params = UploadParams.build(
        engine,
        settings,
        datastack=datastack,
        table=body.table,
        schema=body.schema_type,
        source=body.source,
        column_mapping=body.column_mapping,
        roots_timestamp=body.roots_timestamp,
        voxel_resolution=body.voxel_resolution,
        created=body.created,
        description=body.description,
        chunk_rows=body.chunk_rows,
    )
    run_id = submit_params(engine, params, settings)
    return _accepted(run_id, request)


def _sync(kind: str, datastack: str, body: SyncRequest, request: Request) -> JSONResponse:
    engine, settings = engine_of(request), settings_of(request)
    params = SyncParams.build(
        engine,
        kind,
        datastack,
        table=body.table,
        timestamp=body.timestamp,
        days_to_expire=body.days_to_expire,
        chunk_rows=body.chunk_rows,
        settings=settings,
    )
    run_id = submit_params(engine, params, settings)
    return _accepted(run_id, request)


@router.post("/datastack/{datastack}/ingest", status_code=202, dependencies=[ADMIN])
def ingest(datastack: str, body: SyncRequest, request: Request) -> JSONResponse:
    return _sync("ingest", datastack, body, request)


@router.post("/datastack/{datastack}/update_roots", status_code=202, dependencies=[ADMIN])
def update_roots(datastack: str, body: SyncRequest, request: Request) -> JSONResponse:
    return _sync("update_roots", datastack, body, request)


@router.post("/datastack/{datastack}/materialize", status_code=202, dependencies=[ADMIN])
def materialize(datastack: str, body: SyncRequest, request: Request) -> JSONResponse:
    return _sync("materialize", datastack, body, request)


@router.post("/datastack/{datastack}/complete", status_code=202, dependencies=[ADMIN])
def complete(datastack: str, body: SyncRequest, request: Request) -> JSONResponse:
    return _sync("complete", datastack, body, request)


@router.post("/datastack/{datastack}/export", status_code=202, dependencies=[ADMIN])
def export(datastack: str, body: ExportRequest, request: Request) -> JSONResponse:
    from matengine.workflows.export import export_lock, export_parameters

    engine, settings = engine_of(request), settings_of(request)
    params = export_parameters(
        engine,
        datastack,
        body.version,
        to=body.to,
        fmt=body.format,
        tables=body.tables,
        chunk_rows=body.chunk_rows or settings.chunk_rows,
        neuroglancer=body.neuroglancer,
        order=body.order,
    )
    lock = export_lock(body.version)
    run_id = submit(engine, "export", params, datastack=datastack, table=lock, settings=settings)
    return _accepted(run_id, request)


def _require_run_admin(principal: Principal, run: runs.Run) -> None:
    # the caller named a run, not its datastack: the refusal must not name it
    if not principal.allows(run.datastack or "*", "admin"):
        raise Forbidden(f"this token does not grant 'admin' on run {run.id}")


@router.get("/runs/{run_id}", name="get_run")
def get_run(
    request: Request, run_id: int = PathParam(ge=1, lt=2**63), principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    run = runs.get_run(engine_of(request), run_id)
    _require_run_admin(principal, run)
    return run.to_dict()


@router.post("/runs/{run_id}/cancel")
def cancel_run(
    request: Request, run_id: int = PathParam(ge=1, lt=2**63), principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    engine = engine_of(request)
    run = runs.get_run(engine, run_id)
    _require_run_admin(principal, run)
    runs.finish_run(engine, run_id, "CANCELLED", "cancelled over the admin API")
    return runs.get_run(engine, run_id).to_dict()


@router.get("/datastack/{datastack}/runs", dependencies=[ADMIN])
def list_runs(
    datastack: str, request: Request, limit: int = Query(50, ge=1, le=10_000)
) -> list[dict[str, Any]]:
    return [r.to_dict() for r in runs.list_runs(engine_of(request), datastack, limit)]


@router.get("/datastack/{datastack}/versions", dependencies=[ADMIN])
def versions(datastack: str, request: Request) -> list[dict[str, Any]]:
    catalog.get_datastack(engine_of(request), datastack)
    return [v.to_dict() for v in list_versions(engine_of(request), datastack)]


@router.put("/datastack/{datastack}/version/{version}/pinned", dependencies=[ADMIN])
def pin(datastack: str, version: int, body: PinRequest, request: Request) -> dict[str, Any]:
    """Pin (never expires, never removed) or unpin one version."""
    catalog.get_datastack(engine_of(request), datastack)
    return set_pinned(engine_of(request), datastack, version, body.pinned).to_dict()


@router.post("/datastack/{datastack}/remove_expired", dependencies=[ADMIN])
def remove(datastack: str, request: Request, dry_run: bool = False) -> dict[str, Any]:
    done = remove_expired(engine_of(request), datastack, dry_run=dry_run)
    return {"dry_run": dry_run, "removed": [r.__dict__ for r in done]}


@router.put("/datastack/{datastack}/schedule", dependencies=[ADMIN])
def set_schedule(datastack: str, body: ScheduleRequest, request: Request) -> dict[str, Any]:
    from matengine.workflows.schedule import parse_schedule

    if body.schedule:
        parse_schedule(body.schedule)
    return catalog.set_schedule(engine_of(request), datastack, body.schedule).to_dict()


@router.post("/datastacks", status_code=201, dependencies=[Depends(require_permission("admin"))])
def add_datastack(body: DatastackRequest, request: Request) -> dict[str, Any]:
    ds = catalog.add_datastack(
        engine_of(request),
        body.name,
        segmentation_source=body.segmentation_source,
        voxel_resolution=body.voxel_resolution,
        aligned_volume=body.aligned_volume,
        description=body.description,
    )
    return ds.to_dict()


class ViewRequest(BaseModel):
    name: str
    definition: dict[str, Any]
    description: str = ""


@router.post("/datastack/{datastack}/views", status_code=201, dependencies=[ADMIN])
def define_view(datastack: str, body: ViewRequest, request: Request) -> dict[str, Any]:
    """Define (or redefine) a view: see :mod:`matengine.views` for the definition."""
    from matengine import views

    return views.define_view(
        engine_of(request), datastack, body.name, body.definition, body.description
    ).to_dict()


@router.get("/datastack/{datastack}/views", dependencies=[ADMIN])
def list_views(datastack: str, request: Request) -> list[dict[str, Any]]:
    from matengine import views

    catalog.get_datastack(engine_of(request), datastack)
    return [v.to_dict() for v in views.list_views(engine_of(request), datastack)]


@router.delete("/datastack/{datastack}/views/{name}", dependencies=[ADMIN])
def drop_view(datastack: str, name: str, request: Request) -> dict[str, Any]:
    from matengine import views

    views.drop_view(engine_of(request), datastack, name)
    return {"dropped": name}
