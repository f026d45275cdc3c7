"""Segmentations and root graphs of datastacks, opened once per process and reused.

Opening a ``local://`` graph replays its edit log, and a graphene client holds a connection
pool, so both are cached by URL. A local graph is reopened when its files change on disk
(an edit log can grow while the server runs).

Live queries only need roots, so :func:`root_graph` opens a local graph without its
supervoxel volume; the chunkedgraph routes need the whole :class:`Segmentation`
(``/info`` describes the volume), which :func:`segmentation` opens.
"""

from __future__ import annotations

import threading
from pathlib import Path

from matengine.segmentation import RootGraph, Segmentation, open_segmentation
from matengine.segmentation.local_format import file_stamp

_lock = threading.Lock()
_graphs: dict[str, tuple[tuple, RootGraph]] = {}
_segmentations: dict[str, tuple[tuple, Segmentation]] = {}


def _stamp(url: str) -> tuple:
    """What identifies the current content behind ``url`` (file stamps for local graphs)."""
    if not url.startswith("local://"):
        return ()
    return file_stamp(Path(url[len("local://") :]))


def segmentation(url: str, token: str | None = None) -> Segmentation:
    stamp = _stamp(url)
    with _lock:
        hit = _segmentations.get(url)
        if hit and hit[0] == stamp:
            return hit[1]
    seg = open_segmentation(url, token=token)
    with _lock:
        _segmentations[url] = (stamp, seg)
        _graphs[url] = (stamp, seg.roots)
    return seg


def root_graph(url: str, token: str | None = None) -> RootGraph:
    stamp = _stamp(url)
    with _lock:
        hit = _graphs.get(url)
        if hit and hit[0] == stamp:
            return hit[1]
    graph: RootGraph
    if url.startswith("local://"):
        from matengine.segmentation.local_graph import LocalGraph

        graph = LocalGraph(url[len("local://") :])
    elif url.startswith("precomputed://"):
        from matengine.segmentation.flat import FlatGraph

        graph = FlatGraph()
    elif url.startswith("graphene://"):
        from matengine.segmentation.graphene import GrapheneClient, parse_graphene_url

        base, name = parse_graphene_url(url)
        graph = GrapheneClient(base, name, token=token)
    else:
        graph = open_segmentation(url, token=token).roots
    with _lock:
        _graphs[url] = (stamp, graph)
    return graph


def clear() -> None:
    with _lock:
        _graphs.clear()
        _segmentations.clear()
