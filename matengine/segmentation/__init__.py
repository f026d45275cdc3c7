"""Segmentation sources: supervoxel lookups (CloudVolume) and root graphs over time.

``open_segmentation(url)`` turns a datastack's ``segmentation_source`` into a
:class:`Segmentation`:

* ``local://PATH`` -- the built-in edit-log graph in directory PATH (see ``local_format``);
* ``graphene://http(s)://HOST/segmentation/table/NAME`` -- a PyChunkedGraph server;
* ``precomputed://…`` -- a flat segmentation (root = supervoxel, never expires).
"""

from __future__ import annotations

from pathlib import Path

from matengine.errors import (
    GrapheneRequestError,
    GrapheneUnavailable,
    GraphFormatError,
    SegmentationError,
    SegmentationSourceError,
)
from matengine.segmentation.base import (
    LookupResult,
    RootGraph,
    Segmentation,
    SupervoxelSource,
    VolumeBounds,
)

__all__ = [
    "GrapheneRequestError",
    "GrapheneUnavailable",
    "GraphFormatError",
    "LookupResult",
    "RootGraph",
    "Segmentation",
    "SegmentationError",
    "SegmentationSourceError",
    "SupervoxelSource",
    "VolumeBounds",
    "open_segmentation",
]


def _last_component(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise SegmentationSourceError(f"{url!r}: no table name (last path component)")
    return name


def open_segmentation(url: str, *, token: str | None = None) -> Segmentation:
    """Open a segmentation source by URL (see the module docstring for the schemes).

    ``token`` is the bearer token sent to a graphene server (ignored otherwise).
    Raises :class:`SegmentationSourceError` (or a subclass) with the URL in the message.
    """
    from matengine.segmentation.cloudvolume_lookup import CloudVolumeSupervoxels

    if not isinstance(url, str) or "://" not in url:
        raise SegmentationSourceError(
            f"{url!r}: expected local://PATH, graphene://http(s)://HOST/segmentation/table/"
            "NAME or precomputed://…"
        )
    scheme, rest = url.split("://", 1)
    if scheme == "local":
        from matengine.segmentation.local_graph import LocalGraph

        path = Path(rest)
        if not path.is_dir():
            raise SegmentationSourceError(f"{url}: directory {path} does not exist")
        graph = LocalGraph(path)
        return Segmentation(
            supervoxels=CloudVolumeSupervoxels(graph.supervoxels_url),
            roots=graph,
            url=url,
            name=_last_component(rest),
            flat=False,
        )
    if scheme == "graphene":
        from matengine.segmentation.graphene import open_graphene

        return open_graphene(url, token=token)
    if scheme == "precomputed":
        from matengine.segmentation.flat import FlatGraph

        if not rest:
            raise SegmentationSourceError(f"{url}: empty volume path")
        return Segmentation(
            supervoxels=CloudVolumeSupervoxels(rest),
            roots=FlatGraph(),
            url=url,
            name=_last_component(rest),
            flat=True,
        )
    raise SegmentationSourceError(
        f"{url}: unsupported scheme {scheme!r} (use local://, graphene:// or precomputed://)"
    )
