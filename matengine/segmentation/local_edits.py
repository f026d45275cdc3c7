"""Proofreading on the built-in graph: append a merge or a split to a ``local://`` edit log.

An edit is validated against the latest state, stamped with the server's clock and
appended to ``edits.npz`` with fresh operation and root ids. Writers serialise on an
exclusive ``flock`` of ``PATH/.edits/lock`` (one host; every process that edits the graph
takes it), so two concurrent edits both land, one after the other, each seeing the other's
result. The new log is written beside the old one and moved over it with ``os.replace``:
a reader sees the old log or the new one, never half a file, and the file's stamp
(:func:`local_format.file_stamp`) changes, which makes every cached reader reopen it.

The local graph has no supervoxel adjacency, so a split does not compute a min-cut: the
*sources* are exactly the supervoxels that leave the root, the *sinks* name supervoxels
that must stay (at least one). Everything not listed stays with the sinks.

Timestamps are strictly increasing: an edit gets ``max(now, last edit + 1 µs)``, so "the
state at T" is unambiguous for every edit, and 1 µs before an edit never sees it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from matengine.segmentation.errors import SegmentationError
from matengine.segmentation.local_format import (
    MERGE,
    SPLIT,
    EditLog,
    file_stamp,
    make_root_id,
    save_edits,
)
from matengine.segmentation.local_graph import LocalGraph
from matengine.segmentation.timecodes import from_us

LOCK_DIR = ".edits"  # a directory, so readers that stamp the graph's files ignore it
MAX_SPLIT_SUPERVOXELS = 1_000_000
_SEGMENT_MASK = np.uint64((1 << 56) - 1)


class EditRefused(SegmentationError):
    """The edit does not apply to the current state (unknown supervoxel, same root, ...)."""


@dataclass(frozen=True)
class EditResult:
    operation_id: int
    timestamp: datetime
    kind: str  # "merge" or "split"
    old_root_ids: tuple[int, ...]
    new_root_ids: tuple[int, ...]


@dataclass(frozen=True)
class Merge:
    """Join the roots of two supervoxels. Points are in voxels of the supervoxel volume."""

    supervoxel_a: int
    supervoxel_b: int
    point_a: tuple[float, float, float] | None = None
    point_b: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Split:
    """Move ``sources`` out of their root; ``sinks`` (at least one) stay in the remainder.

    ``root_id`` (optional) must be the root that holds them now."""

    sources: tuple[int, ...]
    sinks: tuple[int, ...]
    root_id: int | None = None
    point_a: tuple[float, float, float] | None = None  # first source's point
    point_b: tuple[float, float, float] | None = None  # first sink's point


Opener = Callable[[Path], LocalGraph]


@contextmanager
def edit_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock of the graph's edit log across threads and processes of this host."""
    lock_dir = directory / LOCK_DIR
    lock_dir.mkdir(exist_ok=True)
    fd = os.open(lock_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def apply_edit(
    directory: str | Path,
    edit: Merge | Split,
    *,
    user_id: int = 0,
    open_graph: Opener | None = None,
    now_us: int | None = None,
) -> EditResult:
    """Validate ``edit`` against the latest state and append it to the log.

    ``open_graph`` may return a cached :class:`LocalGraph`; it is used only if its stamp
    is still the files' stamp once the lock is held (else the graph is reopened).
    """
    directory = Path(directory)
    with edit_lock(directory):
        graph = open_graph(directory) if open_graph is not None else None
        if graph is None or getattr(graph, "stamp", None) != file_stamp(directory):
            graph = LocalGraph(directory)
        log = graph.files.edits
        last = int(log.timestamp_us[-1]) if len(log) else graph.files.created_us
        t = max(int(now_us if now_us is not None else time.time_ns() // 1000), last + 1)
        latest = from_us(last)
        op = int(log.operation_id.max()) + 1 if len(log) else 1
        next_root = int(make_root_id(graph.n_layers, int((graph.index.root_ids & _SEGMENT_MASK).max()) + 1))
        if isinstance(edit, Merge):
            row, result = _merge_row(graph, edit, latest, op, next_root)
        else:
            row, result = _split_row(graph, edit, latest, op, next_root)
        _write(directory, _appended(log, t, op, user_id, row))
    return EditResult(op, from_us(t), *result)


def _known_roots(graph: LocalGraph, svs: np.ndarray, at: datetime) -> np.ndarray:
    roots = graph.get_roots(svs, at)
    if np.any(roots == 0):
        # positions, not ids: messages of the API never echo what a caller sent
        raise EditRefused(f"supervoxel #{int(np.argmax(roots == 0)) + 1} of the edit is not in this graph")
    return roots


def _merge_row(graph: LocalGraph, edit: Merge, latest: datetime, op: int, new_root: int):
    svs = np.array([edit.supervoxel_a, edit.supervoxel_b], np.uint64)
    ra, rb = (int(r) for r in _known_roots(graph, svs, latest))
    if ra == rb:
        raise EditRefused("the two supervoxels already belong to the same root")
    row = dict(kind=MERGE, sv_a=int(svs[0]), sv_b=int(svs[1]), new_root_a=new_root, new_root_b=0)
    return (row, np.zeros(0, np.uint64), edit.point_a, edit.point_b), ("merge", (ra, rb), (new_root,))


def _split_row(graph: LocalGraph, edit: Split, latest: datetime, op: int, new_root: int):
    sources = np.asarray(edit.sources, np.uint64)
    sinks = np.asarray(edit.sinks, np.uint64)
    if len(sources) == 0 or len(sinks) == 0:
        raise EditRefused("a split needs at least one source and one sink supervoxel")
    if len(sources) + len(sinks) > MAX_SPLIT_SUPERVOXELS:
        raise EditRefused(f"a split names at most {MAX_SPLIT_SUPERVOXELS} supervoxels")
    moved = np.unique(sources)
    if len(moved) != len(sources):
        raise EditRefused("a source supervoxel is listed twice")
    if np.isin(sinks, moved).any():
        raise EditRefused("a supervoxel is both a source and a sink")
    roots = _known_roots(graph, np.concatenate([sources, sinks]), latest)
    root = int(roots[0])
    if np.any(roots != root):
        raise EditRefused("sources and sinks must belong to one root")
    if edit.root_id is not None and int(edit.root_id) != root:
        raise EditRefused("the supervoxels do not belong to the given root (it may have been edited)")
    row = dict(
        kind=SPLIT, sv_a=int(sources[0]), sv_b=int(sinks[0]), new_root_a=new_root, new_root_b=new_root + 1
    )
    return (row, moved, edit.point_a, edit.point_b), ("split", (root,), (new_root, new_root + 1))


def _point(p: Sequence[float] | None) -> np.ndarray:
    return np.full((1, 3), np.nan) if p is None else np.asarray(p, np.float64).reshape(1, 3)


def _appended(log: EditLog, t: int, op: int, user_id: int, new) -> EditLog:
    row, moved, point_a, point_b = new
    assert log.user_id is not None and log.coord_a is not None and log.coord_b is not None

    def col(values: np.ndarray, value: int, dtype) -> np.ndarray:
        return np.concatenate([values, np.array([value], dtype)])

    return EditLog(
        timestamp_us=col(log.timestamp_us, t, np.int64),
        operation_id=col(log.operation_id, op, np.uint64),
        kind=col(log.kind, row["kind"], np.uint8),
        sv_a=col(log.sv_a, row["sv_a"], np.uint64),
        sv_b=col(log.sv_b, row["sv_b"], np.uint64),
        new_root_a=col(log.new_root_a, row["new_root_a"], np.uint64),
        new_root_b=col(log.new_root_b, row["new_root_b"], np.uint64),
        split_offsets=col(log.split_offsets, int(log.split_offsets[-1]) + len(moved), np.int64),
        split_svs=np.concatenate([log.split_svs, moved.astype(np.uint64)]),
        user_id=col(log.user_id, int(user_id), np.int64),
        coord_a=np.concatenate([log.coord_a, _point(point_a)]),
        coord_b=np.concatenate([log.coord_b, _point(point_b)]),
    )


def _write(directory: Path, edits: EditLog) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory / LOCK_DIR, prefix="edits-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            save_edits(fh, edits)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / "edits.npz")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
