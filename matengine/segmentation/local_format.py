"""On-disk format of the built-in edit-log graph (``local://PATH``).

A graph is a directory with three files::

    graph.json    {"format": "matengine-edit-log-graph", "version": 1,
                   "name": "<pcg table name>",
                   "created": "<ISO-8601 UTC>",        # time of the initial roots
                   "supervoxels": "<precomputed volume>",  # URL, or a path relative to PATH
                   "resolution": [x, y, z],             # nm per voxel of that volume
                   "n_layers": 10}                      # layer bits used in root ids
    initial.npy   uint64 (N, 2): [supervoxel_id, initial_root_id], one row per supervoxel
    edits.npz     one row per edit, in time order (columns of equal length E):
                  timestamp_us  int64   µs since the Unix epoch, UTC, non-decreasing
                  operation_id  uint64  unique per edit
                  kind          uint8   0 = merge, 1 = split
                  sv_a, sv_b    uint64  merge: one supervoxel of each root to join;
                                        split: a supervoxel that moves (source) and one
                                        that stays (sink)
                  new_root_a    uint64  merge: the new root; split: root of the moved set
                  new_root_b    uint64  merge: 0; split: root of the remainder
                  split_offsets int64 (E+1,) and split_svs uint64: for edit i, the
                                supervoxels that leave the split root are
                                split_svs[split_offsets[i]:split_offsets[i+1]] (empty
                                for merges)
                  optional (edits made through ``local_edits`` write them; older logs
                  lack them and read as user 0 / unknown points):
                  user_id       int64   who made the edit (the API token id; 0 unknown)
                  coord_a, coord_b float64 (E, 3): the points of sv_a / sv_b in
                                voxels of the supervoxel volume (NaN when unknown)

Semantics: an edit at ``t`` belongs to the state at ``T`` iff ``t <= T``; it retires the
roots it touches (at ``t``) and creates its new roots (at ``t``). Root ids are unique and
never reused; initial roots are created at ``created``. Column files keep loading
vectorised and memory-light at 1M supervoxels / 100k edits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from matengine.errors import GraphFormatError
from matengine.segmentation.timecodes import from_us, to_us

FORMAT = "matengine-edit-log-graph"
MERGE, SPLIT = 0, 1
EDIT_COLUMNS = ("timestamp_us", "operation_id", "kind", "sv_a", "sv_b", "new_root_a", "new_root_b")
OPTIONAL_COLUMNS = ("user_id", "coord_a", "coord_b")


def make_root_id(n_layers: int, segment: np.ndarray | int) -> np.ndarray:
    """Chunkedgraph-looking root ids: layer in the top 8 bits, root chunk (0,0,0)."""
    return (np.uint64(n_layers) << np.uint64(56)) | np.asarray(segment, dtype=np.uint64)


def make_supervoxel_id(segment: np.ndarray | int) -> np.ndarray:
    """Layer-1 ids (top 8 bits = 1); they exceed 2**53, which catches float conversions."""
    return (np.uint64(1) << np.uint64(56)) | np.asarray(segment, dtype=np.uint64)


@dataclass
class EditLog:
    timestamp_us: np.ndarray
    operation_id: np.ndarray
    kind: np.ndarray
    sv_a: np.ndarray
    sv_b: np.ndarray
    new_root_a: np.ndarray
    new_root_b: np.ndarray
    split_offsets: np.ndarray
    split_svs: np.ndarray
    user_id: np.ndarray | None = None  # int64 (E,); None = unknown (0) for every edit
    coord_a: np.ndarray | None = None  # float64 (E, 3); None = unknown (NaN)
    coord_b: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.timestamp_us)
        if self.user_id is None:
            self.user_id = np.zeros(n, np.int64)
        if self.coord_a is None:
            self.coord_a = np.full((n, 3), np.nan)
        if self.coord_b is None:
            self.coord_b = np.full((n, 3), np.nan)

    def __len__(self) -> int:
        return len(self.timestamp_us)

    def split_set(self, i: int) -> np.ndarray:
        return self.split_svs[self.split_offsets[i] : self.split_offsets[i + 1]]

    @classmethod
    def empty(cls) -> EditLog:
        u = np.zeros(0, np.uint64)
        return cls(np.zeros(0, np.int64), u, np.zeros(0, np.uint8), u, u, u, u, np.zeros(1, np.int64), u)


@dataclass
class GraphFiles:
    directory: Path
    name: str
    created_us: int
    supervoxels_url: str
    resolution: np.ndarray
    n_layers: int
    initial: np.ndarray  # (N, 2) uint64
    edits: EditLog

    @property
    def created(self) -> datetime:
        return from_us(self.created_us)


def resolve_volume_url(directory: Path, value: str) -> str:
    """``supervoxels`` entry to a CloudVolume path: URLs stay, paths are graph-relative."""
    if "://" in value:
        return value
    return "file://" + str((directory / value).resolve())


def write_graph(
    directory: str | Path,
    *,
    name: str,
    created: datetime,
    supervoxels: str,
    resolution: tuple[float, float, float],
    initial: np.ndarray,
    edits: EditLog,
    n_layers: int = 10,
) -> Path:
    """Write a graph directory (used by ``synth`` and by tests building small graphs)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": 1,
        "name": name,
        "created": from_us(to_us(created)).isoformat(),
        "supervoxels": supervoxels,
        "resolution": [float(r) for r in resolution],
        "n_layers": int(n_layers),
    }
    np.save(directory / "initial.npy", np.ascontiguousarray(initial, dtype=np.uint64))
    save_edits(directory / "edits.npz", edits)
    # graph.json last: its presence marks a complete graph.
    (directory / "graph.json").write_text(json.dumps(meta, indent=2))
    return directory


def save_edits(target: Path | BinaryIO, edits: EditLog) -> None:
    """Write the columns of ``edits`` (an ``edits.npz``) to a path or an open file."""
    assert edits.user_id is not None and edits.coord_a is not None and edits.coord_b is not None
    np.savez(
        target,
        timestamp_us=edits.timestamp_us.astype(np.int64),
        operation_id=edits.operation_id.astype(np.uint64),
        kind=edits.kind.astype(np.uint8),
        sv_a=edits.sv_a.astype(np.uint64),
        sv_b=edits.sv_b.astype(np.uint64),
        new_root_a=edits.new_root_a.astype(np.uint64),
        new_root_b=edits.new_root_b.astype(np.uint64),
        split_offsets=edits.split_offsets.astype(np.int64),
        split_svs=edits.split_svs.astype(np.uint64),
        user_id=edits.user_id.astype(np.int64),
        coord_a=edits.coord_a.astype(np.float64),
        coord_b=edits.coord_b.astype(np.float64),
    )


def file_stamp(directory: str | Path) -> tuple:
    """What identifies the content of a graph directory: (name, inode, mtime, size) of its
    files. Edits replace ``edits.npz`` atomically with a larger file, so any edit changes
    the stamp; a reader holding a graph with another stamp must reopen it."""
    directory = Path(directory)
    out: list[tuple] = []
    for name in ("graph.json", "initial.npy", "edits.npz"):
        try:
            st = (directory / name).stat()
            out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((name, None, None, None))
    return tuple(out)


def read_graph(directory: str | Path) -> GraphFiles:
    """Read and shape-check a graph directory; semantic checks happen during replay."""
    directory = Path(directory)
    meta_path = directory / "graph.json"
    if not meta_path.is_file():
        raise GraphFormatError(f"{meta_path}: missing (not an edit-log graph directory)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise GraphFormatError(f"{meta_path}: invalid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise GraphFormatError(f"{meta_path}: 'format' must be {FORMAT!r}")
    for key in ("name", "created", "supervoxels", "resolution"):
        if key not in meta:
            raise GraphFormatError(f"{meta_path}: missing key {key!r}")
    initial_path = directory / "initial.npy"
    if not initial_path.is_file():
        raise GraphFormatError(f"{initial_path}: missing")
    initial = np.load(initial_path)
    if initial.ndim != 2 or initial.shape[1] != 2 or initial.dtype != np.uint64:
        raise GraphFormatError(f"{initial_path}: expected uint64 (N, 2), got {initial.dtype} {initial.shape}")
    edits = _read_edits(directory / "edits.npz")
    return GraphFiles(
        directory=directory,
        name=str(meta["name"]),
        created_us=to_us(meta["created"]),
        supervoxels_url=resolve_volume_url(directory, str(meta["supervoxels"])),
        resolution=np.asarray(meta["resolution"], dtype=np.float64),
        n_layers=int(meta.get("n_layers", 10)),
        initial=initial,
        edits=edits,
    )


def _read_edits(path: Path) -> EditLog:
    if not path.is_file():
        return EditLog.empty()
    with np.load(path) as z:
        missing = [c for c in (*EDIT_COLUMNS, "split_offsets", "split_svs") if c not in z]
        if missing:
            raise GraphFormatError(f"{path}: missing columns {missing}")
        cols = {c: z[c] for c in (*EDIT_COLUMNS, "split_offsets", "split_svs")}
        optional = {c: z[c] for c in OPTIONAL_COLUMNS if c in z}
    n = len(cols["timestamp_us"])
    for c in EDIT_COLUMNS:
        if cols[c].shape != (n,):
            raise GraphFormatError(f"{path}: column {c!r} has shape {cols[c].shape}, want ({n},)")
    if cols["split_offsets"].shape != (n + 1,):
        raise GraphFormatError(f"{path}: split_offsets must have {n + 1} entries")
    if n and np.any(np.diff(cols["timestamp_us"]) < 0):
        bad = int(np.argmax(np.diff(cols["timestamp_us"]) < 0)) + 1
        raise GraphFormatError(f"{path}: timestamp_us decreases at edit {bad}")
    for c, shape in (("user_id", (n,)), ("coord_a", (n, 3)), ("coord_b", (n, 3))):
        if c in optional and optional[c].shape != shape:
            raise GraphFormatError(f"{path}: column {c!r} has shape {optional[c].shape}, want {shape}")
    return EditLog(
        timestamp_us=cols["timestamp_us"].astype(np.int64),
        operation_id=cols["operation_id"].astype(np.uint64),
        kind=cols["kind"].astype(np.uint8),
        sv_a=cols["sv_a"].astype(np.uint64),
        sv_b=cols["sv_b"].astype(np.uint64),
        new_root_a=cols["new_root_a"].astype(np.uint64),
        new_root_b=cols["new_root_b"].astype(np.uint64),
        split_offsets=cols["split_offsets"].astype(np.int64),
        split_svs=cols["split_svs"].astype(np.uint64),
        user_id=optional["user_id"].astype(np.int64) if "user_id" in optional else None,
        coord_a=optional["coord_a"].astype(np.float64) if "coord_a" in optional else None,
        coord_b=optional["coord_b"].astype(np.float64) if "coord_b" in optional else None,
    )
