"""Admin routes: start each workflow (202 + run id), read runs, versions, schedules.

Every route needs the ``admin`` permission on its datastack (a run's datastack for run routes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from matengine import catalog
from matengine.api.deps import engine_of, settings_of
from matengine.auth import Principal, get_principal, require_permission
from matengine.versions import list_versions, remove_expired, set_pinned
from matengine.workflows import runs
from matengine.workflows.bulk_upload import check_request
from matengine.workflows.submit import submit, sync_parameters

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
ADMIN = Depends(require_permission("admin"))


class PinRequest(BaseModel):
    pinned: bool

    model_config = {"extra": "forbid"}


class UploadRequest(BaseModel):
    table: str
    schema_type: str = Field(alias="schema")
    source: str
    column_mapping: dict[str, Any]
    roots_timestamp: str | None = None
    voxel_resolution: list[float] | None = None
    created: str | None = None
    chunk_rows: int | None = None
    description: str = ""

    model_config = {"populate_by_name": True}


class SyncRequest(BaseModel):
    table: str | None = None
    timestamp: str | None = None
    days_to_expire: int | None = None
    chunk_rows: int | None = None


class DatastackRequest(BaseModel):
    name: str
    segmentation_source: str
    voxel_resolution: list[float]
    aligned_volume: str | None = None
    description: str = ""


class ScheduleRequest(BaseModel):
    schedule: str | None = None


def _accepted(run_id: int, request: Request) -> JSONResponse:
    url = str(request.url_for("get_run", run_id=run_id))
    return JSONResponse({"run_id": run_id, "url": url}, status_code=202, headers={"Location": url})


@router.post("/datastack/{datastack}/bulk_upload", status_code=202, dependencies=[ADMIN])
def bulk_upload(datastack: str, body: UploadRequest, request: Request) -> JSONResponse:
    engine, settings = engine_of(request), settings_of(request)
    params = {
        "datastack": datastack,
        "table": body.table,
        "schema": body.schema_type,
        "source": body.source,
        "column_mapping": body.column_mapping,
        "roots_timestamp": body.roots_timestamp,
        "voxel_resolution": body.voxel_resolution,
        "created": body.created,
        "description": body.description,
        "chunk_rows": body.chunk_rows or settings.chunk_rows,
    }
    check_request(engine, params)
    run_id = submit(engine, "bulk_upload", params, datastack=datastack, table=body.table, settings=settings)
    return _accepted(run_id, request)


def _sync(kind: str, datastack: str, body: SyncRequest, request: Request) -> JSONResponse:
    engine, settings = engine_of(request), settings_of(request)
    params = sync_parameters(
        engine,
        kind,
        datastack,
        table=body.table,
        timestamp=body.timestamp,
        days_to_expire=body.days_to_expire,
        chunk_rows=body.chunk_rows,
    )
    table = body.table if kind in ("ingest", "update_roots") else None
    run_id = submit(engine, kind, params, datastack=datastack, table=table, settings=settings)
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


@router.get("/runs/{run_id}", name="get_run")
def get_run(run_id: int, request: Request, principal: Principal = Depends(get_principal)) -> dict[str, Any]:
    run = runs.get_run(engine_of(request), run_id)
    principal.require(run.datastack or "*", "admin")
    return run.to_dict()


@router.post("/runs/{run_id}/cancel")
def cancel_run(
    run_id: int, request: Request, principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    engine = engine_of(request)
    run = runs.get_run(engine, run_id)
    principal.require(run.datastack or "*", "admin")
    runs.finish_run(engine, run_id, "CANCELLED", "cancelled over the admin API")
    return runs.get_run(engine, run_id).to_dict()


@router.get("/datastack/{datastack}/runs", dependencies=[ADMIN])
def list_runs(datastack: str, request: Request, limit: int = 50) -> list[dict[str, Any]]:
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
