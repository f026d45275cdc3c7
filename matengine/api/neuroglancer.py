"""Neuroglancer sources on our server, and Neuroglancer states that show them.

* ``/neuroglancer/annotations/{ds}/{version}/{table}/…``: the stable URL of table ``table`` of
  version ``version`` as a precomputed annotation source (``precomputed://<that URL>``), with
  the ``view`` permission every read needs. Built on first request, then served from a cache
  (versions never change).
* :class:`NeuroglancerCors`: Neuroglancer runs on its own origin (a hosted client, or the
  ``neuroglancer`` package's server), so the read-only sources it fetches (these annotation
  files and the segmentation's precomputed volume) answer cross-origin ``GET`` with
  ``Access-Control-Allow-Origin: *``. No credentials are allowed cross-origin: a foreign page
  never rides on a user's cookie; it reads only what a token it holds (or auth off) allows.
* :func:`neuroglancer_state` / :func:`state_url`: a state with the datastack's segmentation and
  one table's annotations linked to it (each root-id column a relationship), for the
  dashboard's links. The client is ``MATENGINE_NEUROGLANCER_URL`` (default: the public demo).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matengine import table_permissions
from matengine.api.deps import engine_of, settings_of
from matengine.auth import principal_from_request, require_permission
from matengine.db.identifiers import validate_name
from matengine.errors import NotFound
from matengine.export.neuroglancer import cached_annotations

router = APIRouter(tags=["neuroglancer"])
view = Depends(require_permission("view"))
DEFAULT_CLIENT = "https://neuroglancer-demo.appspot.com/"

# the files the annotation writer makes: info, spatial0/0_0_0, by_id/<id>, rel_<column>/<id>
_FILE = re.compile(r"^(info|spatial0/0_0_0|by_id/[0-9]{1,20}|rel_[a-z][a-z0-9_]{0,62}/[0-9]{1,20})$")
_CORS_PATHS = re.compile(r"^/(neuroglancer/annotations/|segmentation/table/[^/]+/volume/)")


def _cache_root(request: Request) -> Path:
    return Path(settings_of(request).home) / "neuroglancer"


@router.get(
    "/neuroglancer/annotations/{datastack}/{version}/{table}/{path:path}",
    dependencies=[view],
    name="neuroglancer_annotations",
)
async def annotation_file(datastack: str, version: int, table: str, path: str, request: Request) -> Response:
    validate_name(table, "table name")
    if not _FILE.match(path):
        raise NotFound("not found")
    # the rows of a table its read permission hides must not leak through its annotation files
    table_permissions.require(
        engine_of(request), principal_from_request(request), datastack, table, table_permissions.Access.READ
    )
    folder = await run_in_threadpool(
        cached_annotations, engine_of(request), _cache_root(request), datastack, version, table
    )
    target = folder / path
    if not target.is_file():  # a segment or id without annotations
        raise NotFound("not found")
    return FileResponse(target, media_type="application/octet-stream")


class NeuroglancerCors:
    """``Access-Control-Allow-Origin: *`` on GETs of the Neuroglancer sources only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not _CORS_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"access-control-allow-origin", b"*")]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def annotation_source(base: str, datastack: str, version: int, table: str) -> str:
    return f"precomputed://{base}/neuroglancer/annotations/{datastack}/{int(version)}/{table}"


def segmentation_source(base: str, pcg_table: str) -> str:
    """The segmentation's supervoxel volume as we serve it (precomputed)."""
    return f"precomputed://{base}/segmentation/table/{pcg_table}/volume"


def neuroglancer_state(
    base: str,
    datastack: str,
    version: int,
    table: str,
    *,
    segmentation: str | None,
    voxel_resolution: tuple[float, float, float],
    relationships: list[str],
    selected: list[int] | None = None,
) -> dict[str, Any]:
    """A Neuroglancer state: the segmentation, and ``table`` linked to it by its root ids."""
    layers: list[dict[str, Any]] = []
    if segmentation:
        seg_layer: dict[str, Any] = {"type": "segmentation", "source": segmentation, "name": "segmentation"}
        if selected:
            seg_layer["segments"] = [str(s) for s in selected]
        layers.append(seg_layer)
    ann: dict[str, Any] = {
        "type": "annotation",
        "source": annotation_source(base, datastack, version, table),
        "name": table,
        "tab": "annotations",
    }
    if segmentation and relationships:
        # each root-id column relates an annotation to segments of the segmentation layer;
        # filtering by it lists only the annotations of the selected segments
        ann["linkedSegmentationLayer"] = {r: "segmentation" for r in relationships}
        ann["filterBySegmentation"] = list(relationships)
    layers.append(ann)
    return {
        "dimensions": {axis: [float(r) * 1e-9, "m"] for axis, r in zip("xyz", voxel_resolution, strict=True)},
        "layers": layers,
        "selectedLayer": {"layer": table, "visible": True},
        "layout": "xy-3d",
    }


def client_url() -> str:
    return os.environ.get("MATENGINE_NEUROGLANCER_URL", DEFAULT_CLIENT)


def state_url(state: dict[str, Any], client: str | None = None) -> str:
    body = urllib.parse.quote(json.dumps(state, separators=(",", ":")))
    return (client or client_url()).rstrip("#!") + "#!" + body


def version_links(engine: Any, base: str, datastack: str, version: int) -> dict[str, str]:
    """For the dashboard: each table of a version → a Neuroglancer state showing it."""
    from matengine import catalog
    from matengine.export.source import layout_of
    from matengine.query import meta
    from matengine.schemas import get_schema

    stack = catalog.get_datastack(engine, datastack)
    out = {}
    for vt in meta.version_tables(engine, datastack, version):
        layout = layout_of(get_schema(vt.schema_type))
        state = neuroglancer_state(
            base,
            datastack,
            version,
            vt.table_name,
            segmentation=segmentation_source(base, stack.pcg_table_name),
            voxel_resolution=vt.voxel_resolution,
            relationships=layout.root_columns,
        )
        out[vt.table_name] = state_url(state)
    return out
