"""Segmentations and root graphs, opened once per process and reused — the one cache that
API servers (live queries, chunkedgraph routes) and workflow workers (chunk tasks) share.

Opening a ``local://`` graph replays its edit log, a CloudVolume reads its info, and a graphene
client holds a connection pool, so all are cached by (URL, token). One staleness rule: a
``local://`` source is reopened when any file of its directory changes (an edit log may grow
while a server or worker runs, and must never be answered from a stale copy); other sources are
remote and answer for themselves.

Live queries only need roots, so :func:`root_graph` opens a local graph without its supervoxel
volume; ingest and the chunkedgraph routes need the whole :class:`Segmentation`
(:func:`segmentation`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from matengine.segmentation import RootGraph, Segmentation, open_segmentation

_lock = threading.Lock()
_Key = tuple[str, str | None]
_segmentations: dict[_Key, tuple[tuple, Segmentation]] = {}
_graphs: dict[_Key, tuple[tuple, RootGraph]] = {}


def stamp(url: str) -> tuple:
    """What identifies the content behind ``url`` now: for a ``local://`` directory, the inode,
    mtime and size of each graph file (:func:`~matengine.segmentation.local_format.file_stamp`;
    an edit replaces ``edits.npz`` atomically, so it always changes); ``()`` for remote sources."""
    if not url.startswith("local://"):
        return ()
    from matengine.segmentation.local_format import file_stamp

    directory = Path(url[len("local://") :])
    return file_stamp(directory) if directory.is_dir() else ()


def segmentation(url: str, token: str | None = None) -> Segmentation:
    key, now = (url, token), stamp(url)
    with _lock:
        hit = _segmentations.get(key)
        if hit is not None and hit[0] == now:
            return hit[1]
    seg = open_segmentation(url, token=token)
    with _lock:
        _segmentations[key] = (now, seg)
        _graphs[key] = (now, seg.roots)
    return seg


def root_graph(url: str, token: str | None = None) -> RootGraph:
    key, now = (url, token), stamp(url)
    with _lock:
        hit = _graphs.get(key)
        if hit is not None and hit[0] == now:
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
        _graphs[key] = (now, graph)
    return graph


def clear() -> None:
    with _lock:
        _graphs.clear()
        _segmentations.clear()
