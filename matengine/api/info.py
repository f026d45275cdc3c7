"""Info-service routes (``/info/...``): what caveclient reads when it is constructed.

``local_server`` is our own origin, so caveclient sends materialize, annotation and
chunkedgraph calls back here. A ``local://`` or ``precomputed://`` segmentation is advertised
as ``graphene://<us>/segmentation/table/<pcg>`` (we serve its chunkedgraph routes); a
``graphene://`` source is advertised unchanged and its calls proxied (:mod:`chunkedgraph`).
"""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Depends, Request

from matengine import catalog
from matengine.api.deps import base_url, engine_of
from matengine.auth import Principal, get_principal, require_permission
from matengine.catalog import Datastack
from matengine.errors import NotFound

INFO_VERSION = "4.6.0"
router = APIRouter(tags=["info"])
v2 = "/info/api/v2"


def av_id(name: str) -> int:
    """A stable positive id per aligned volume name (caveclient needs an int)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def pcg_names(ds: Datastack) -> set[str]:
    """Table names under which caveclient may address this datastack's chunkedgraph."""
    raw = ds.segmentation_source.rstrip("/").rsplit("/", 1)[-1]
    return {ds.pcg_table_name, raw}


def client_segmentation_source(ds: Datastack, origin: str) -> str:
    if ds.segmentation_source.startswith("graphene://"):
        return ds.segmentation_source
    return f"graphene://{origin}/segmentation/table/{ds.pcg_table_name}"


def _first_table(tables: list[catalog.AnnotationTable], name: str, schema: str) -> str | None:
    for t in tables:
        if t.table_name == name:
            return name
    return next((t.table_name for t in tables if t.schema_type == schema), None)


def datastack_info(request: Request, ds: Datastack) -> dict[str, Any]:
    origin = base_url(request)
    tables = catalog.list_tables(engine_of(request), ds.name)
    x, y, z = ds.voxel_resolution
    info = ds.info
    return {
        "name": ds.name,
        "aligned_volume": _aligned_volume(ds),
        "segmentation_source": client_segmentation_source(ds, origin),
        "local_server": origin,
        # set per datastack (matengine datastack set-info), else guessed from the tables
        "synapse_table": info.get("synapse_table") or _first_table(tables, "synapses", "synapse"),
        "soma_table": info.get("soma_table")
        or _first_table(tables, "nucleus_detection", "nucleus_detection"),
        "analysis_database": None,
        "viewer_site": info.get("viewer_site"),
        "description": ds.description,
        "viewer_resolution_x": x,
        "viewer_resolution_y": y,
        "viewer_resolution_z": z,
        "skeleton_source": info.get("skeleton_source"),
    }


def datastacks_of_aligned_volume(request: Request, name: str, principal: Principal) -> list[Datastack]:
    """Datastacks on aligned volume ``name`` the caller may view; 404 if none."""
    found = [d for d in catalog.list_datastacks(engine_of(request)) if d.aligned_volume == name]
    visible = [d for d in found if principal.allows(d.name, "view")]
    if not found:
        raise NotFound(f"unknown aligned volume {name!r}")
    if not visible:
        principal.require(found[0].name, "view")
    return visible


@router.get("/info/version")
def info_version() -> str:
    return INFO_VERSION


@router.get(v2 + "/datastacks")
def datastacks(request: Request, principal: Principal = Depends(get_principal)) -> list[str]:
    return [d.name for d in catalog.list_datastacks(engine_of(request)) if principal.allows(d.name, "view")]


@router.get(v2 + "/datastack/full/{datastack_name}")
def datastack_full(
    datastack_name: str, request: Request, _: Principal = Depends(require_permission("view"))
) -> dict[str, Any]:
    return datastack_info(request, catalog.get_datastack(engine_of(request), datastack_name))


@router.get(v2 + "/datastack/{datastack_name}")
def datastack(
    datastack_name: str, request: Request, _: Principal = Depends(require_permission("view"))
) -> dict[str, Any]:
    info = datastack_info(request, catalog.get_datastack(engine_of(request), datastack_name))
    info["aligned_volume_id"] = info["aligned_volume"]["id"]
    return info


@router.get(v2 + "/datastack/{datastack_name}/image_sources")
def image_sources(
    datastack_name: str, request: Request, _: Principal = Depends(require_permission("view"))
) -> dict[str, Any]:
    catalog.get_datastack(engine_of(request), datastack_name)
    return {}


def _aligned_volume(ds: Datastack) -> dict[str, Any]:
    return {
        "name": ds.aligned_volume,
        "id": av_id(ds.aligned_volume),
        # caveclient's info.image_source() reads it here
        "image_source": ds.info.get("image_source"),
        "description": ds.description,
    }


@router.get(v2 + "/aligned_volume")
def aligned_volumes(request: Request, principal: Principal = Depends(get_principal)) -> list[str]:
    names = {
        d.aligned_volume
        for d in catalog.list_datastacks(engine_of(request))
        if principal.allows(d.name, "view")
    }
    return sorted(names)


@router.get(v2 + "/aligned_volume/id/{aligned_volume_id}")
def aligned_volume_by_id(
    aligned_volume_id: int, request: Request, principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    for d in catalog.list_datastacks(engine_of(request)):
        if av_id(d.aligned_volume) == aligned_volume_id and principal.allows(d.name, "view"):
            return _aligned_volume(d)
    raise NotFound(f"unknown aligned volume id {aligned_volume_id}")


@router.get(v2 + "/aligned_volume/{name}")
def aligned_volume(
    name: str, request: Request, principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    return _aligned_volume(datastacks_of_aligned_volume(request, name, principal)[0])


@router.get(v2 + "/aligned_volume/{name}/datastacks")
def aligned_volume_datastacks(
    name: str, request: Request, principal: Principal = Depends(get_principal)
) -> list[str]:
    return [d.name for d in datastacks_of_aligned_volume(request, name, principal)]
