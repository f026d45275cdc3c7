"""Neuroglancer on our server: a version table's precomputed annotations, and the Neuroglancer
client of the ``neuroglancer`` package to look at them.

* ``/neuroglancer/annotations/{ds}/{version}/{table}/…``: the stable URL of table ``table`` of
  version ``version`` as a precomputed annotation source (``precomputed://<that URL>``), with
  the ``view`` permission every read needs. Built on first request, then served from a cache
  (versions never change).
* ``/neuroglancer/client/…``: the client's static files (public: code, no data). Served from
  our origin, its requests for our data carry the ``middle_auth_token`` cookie of the
  dashboard login.
* :func:`state_url`: a Neuroglancer state with the datastack's segmentation and one table's
  annotations, for the dashboard's links.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from matengine.api.deps import engine_of, settings_of
from matengine.auth import require_permission
from matengine.db.identifiers import validate_name
from matengine.errors import NotFound
from matengine.export.neuroglancer import cached_annotations

router = APIRouter(tags=["neuroglancer"])
view = Depends(require_permission("view"))

# the files the annotation writer makes: info, spatial0/0_0_0, by_id/<id>, rel_<column>/<id>
_FILE = re.compile(r"^(info|spatial0/0_0_0|by_id/[0-9]{1,20}|rel_[a-z][a-z0-9_]{0,62}/[0-9]{1,20})$")
_CLIENT_FILE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


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
    folder = await run_in_threadpool(
        cached_annotations, engine_of(request), _cache_root(request), datastack, version, table
    )
    target = folder / path
    if not target.is_file():  # a segment or id without annotations
        raise NotFound("not found")
    return FileResponse(target, media_type="application/octet-stream")


def _client_dir() -> Path | None:
    try:
        import neuroglancer
    except ImportError:
        return None
    folder = Path(neuroglancer.__file__).parent / "static" / "client"
    return folder if (folder / "index.html").is_file() else None


@router.get("/neuroglancer/client/{path:path}", include_in_schema=False)
def client_file(path: str) -> Response:
    folder = _client_dir()
    name = path or "index.html"
    if folder is None or not _CLIENT_FILE.match(name) or not (folder / name).is_file():
        raise NotFound("not found")
    from neuroglancer.static import guess_mime_type_from_path  # .wasm must be application/wasm

    return FileResponse(folder / name, media_type=guess_mime_type_from_path(name))


def annotation_source(base: str, datastack: str, version: int, table: str) -> str:
    return f"precomputed://{base}/neuroglancer/annotations/{datastack}/{int(version)}/{table}"


def state_url(
    base: str,
    datastack: str,
    version: int,
    table: str,
    *,
    segmentation: str | None,
    voxel_resolution: tuple[float, float, float],
    relationships: list[str],
    selected: list[int] | None = None,
) -> str:
    """A URL of our Neuroglancer client showing ``table`` over the segmentation."""
    layers = []
    if segmentation:
        seg_layer = {"type": "segmentation", "source": segmentation, "name": "segmentation"}
        if selected:
            seg_layer["segments"] = [str(s) for s in selected]
        layers.append(seg_layer)
    ann = {
        "type": "annotation",
        "source": annotation_source(base, datastack, version, table),
        "name": table,
    }
    if segmentation and relationships:
        # each root-id column relates an annotation to segments of the segmentation layer;
        # filtering by it lists only the annotations of the selected segments
        ann["linkedSegmentationLayer"] = {r: "segmentation" for r in relationships}
        ann["filterBySegmentation"] = list(relationships)
    layers.append(ann)
    state = {
        "dimensions": {axis: [float(r) * 1e-9, "m"] for axis, r in zip("xyz", voxel_resolution, strict=True)},
        "layers": layers,
        "selectedLayer": {"layer": table, "visible": True},
        "layout": "xy-3d",
    }
    return f"{base}/neuroglancer/client/#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))
