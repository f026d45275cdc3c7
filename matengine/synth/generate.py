"""Build a synthetic dataset: volume, edit-log graph, annotation tables, ``dataset.json``.

Layout of ``directory`` (all paths inside ``dataset.json`` are relative to it)::

    dataset.json        what is where (resolutions, time span, tables, graph)
    volume/             precomputed supervoxel volume (compressed_segmentation, chunked)
    <pcg_name>/         local:// edit-log graph (graph.json, initial.npy, edits.npz)
    synapses/           synapse table columns (.npy) + column_mapping.json
    cells/              cell_type_local table columns (.npy) + column_mapping.json

``synapses/root_ids_ordered.npy`` holds the roots at ``time.initial`` (before any edit).
Annotation rows belong to every state at or after ``annotations_created`` (= initial).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from matengine.segmentation.cloudvolume_lookup import points_to_voxels
from matengine.segmentation.local_format import write_graph
from matengine.segmentation.timecodes import from_us, to_us
from matengine.synth.annotations import write_cells, write_synapses
from matengine.synth.edits import generate_edits, initial_agglomeration
from matengine.synth.volume import make_grid, write_volume

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
N_LAYERS = 10


@dataclass
class DatasetInfo:
    """Where a generated dataset lives and what it contains (mirrors ``dataset.json``)."""

    directory: Path
    volume_url: str  # file://… precomputed volume
    graph_url: str  # local://… edit-log graph
    pcg_name: str
    segmentation_resolution: tuple[float, float, float]
    annotation_resolution: tuple[float, float, float]
    voxel_offset: tuple[int, int, int]
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    initial_timestamp: datetime  # roots in root_ids_ordered.npy are at this time
    start: datetime
    end: datetime
    supervoxels: int
    edits: int
    edit_timestamps: list[datetime] = field(repr=False, default_factory=list)
    tables: dict[str, Path] = field(default_factory=dict)  # table name -> folder

    @property
    def precomputed_url(self) -> str:
        return "precomputed://" + self.volume_url


def generate_dataset(
    directory: str | Path,
    *,
    size: tuple[int, int, int] = (160, 128, 48),
    supervoxels: int = 600,
    edits: int = 60,
    synapses: int = 2000,
    cells: int = 100,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    span: timedelta = timedelta(days=30),
    segmentation_resolution: tuple[float, float, float] = (8.0, 8.0, 40.0),
    annotation_resolution: tuple[float, float, float] = (4.0, 4.0, 40.0),
    voxel_offset: tuple[int, int, int] = (96, 160, 12),
    chunk_size: tuple[int, int, int] = (64, 64, 64),
    initial_roots: int | None = None,
    pcg_name: str = "synth_pcg",
) -> DatasetInfo:
    """Write a complete synthetic dataset into ``directory`` and describe it.

    Deterministic for a given ``seed``. The default is small (fast tests); the generator
    streams volume slabs and annotation row chunks, so 1M supervoxels / 10M synapses fit
    in modest memory. ``supervoxels`` is exact; ~3% of volume blocks are label 0.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start_us = to_us(start)
    seg_res = np.asarray(segmentation_resolution, np.float64)
    ann_res = np.asarray(annotation_resolution, np.float64)

    grid = make_grid(voxel_offset, size, supervoxels, rng)
    write_volume(directory / "volume", grid, seg_res, chunk_size)

    svids = grid.supervoxel_ids
    initial = initial_agglomeration(svids, initial_roots or max(1, supervoxels // 8), N_LAYERS, rng)
    log = generate_edits(initial, edits, start_us, int(span / timedelta(microseconds=1)), N_LAYERS, rng)
    graph_dir = directory / pcg_name
    write_graph(
        graph_dir,
        name=pcg_name,
        created=start,
        supervoxels="../volume",
        resolution=tuple(seg_res),
        initial=initial,
        edits=log,
        n_layers=N_LAYERS,
    )

    init_sorted = initial[np.argsort(initial[:, 0])]

    def roots_at_initial(sv: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(init_sorted[:, 0], sv), len(init_sorted) - 1)
        hit = init_sorted[pos, 0] == sv
        return np.where(hit & (sv != 0), init_sorted[pos, 1], 0).astype(np.uint64)

    def labels(points: np.ndarray) -> np.ndarray:
        vox, _ = points_to_voxels(points, ann_res, seg_res)
        return grid.labels_at(vox)

    offset = np.asarray(voxel_offset, np.int64)
    stop = offset + np.asarray(size, np.int64)
    box_lo = np.floor(offset * seg_res / ann_res).astype(np.int64)
    box_hi = np.ceil(stop * seg_res / ann_res).astype(np.int64)
    write_synapses(directory / "synapses", synapses, box_lo, box_hi, labels, roots_at_initial, rng)
    write_cells(directory / "cells", cells, box_lo, box_hi, rng)

    end = start + span
    meta = {
        "format": "matengine-synth",
        "version": 1,
        "seed": seed,
        "volume": {
            "path": "volume",
            "resolution": seg_res.tolist(),
            "voxel_offset": list(voxel_offset),
            "size": list(size),
            "chunk_size": list(chunk_size),
            "encoding": "compressed_segmentation",
            "supervoxels": supervoxels,
        },
        "graph": {"path": pcg_name, "name": pcg_name, "edits": len(log)},
        "time": {"initial": start.isoformat(), "start": start.isoformat(), "end": end.isoformat()},
        "annotation_resolution": ann_res.tolist(),
        "annotations_created": start.isoformat(),
        "tables": {
            "synapses": {
                "folder": "synapses",
                "schema": "synapse",
                "rows": synapses,
                "points": ["pre_pt", "ctr_pt", "post_pt"],
                "bound_points": ["pre_pt", "post_pt"],
            },
            "cells": {
                "folder": "cells",
                "schema": "cell_type_local",
                "rows": cells,
                "points": ["pt"],
                "bound_points": ["pt"],
            },
        },
    }
    (directory / "dataset.json").write_text(json.dumps(meta, indent=2))
    return load_info(directory)


def load_info(directory: str | Path) -> DatasetInfo:
    """:class:`DatasetInfo` of an existing dataset directory."""
    directory = Path(directory).resolve()
    meta = json.loads((directory / "dataset.json").read_text())
    vol, graph = meta["volume"], meta["graph"]
    edits = np.load(directory / graph["path"] / "edits.npz")["timestamp_us"]
    return DatasetInfo(
        directory=directory,
        volume_url="file://" + str(directory / vol["path"]),
        graph_url="local://" + str(directory / graph["path"]),
        pcg_name=graph["name"],
        segmentation_resolution=tuple(vol["resolution"]),
        annotation_resolution=tuple(meta["annotation_resolution"]),
        voxel_offset=tuple(vol["voxel_offset"]),
        size=tuple(vol["size"]),
        chunk_size=tuple(vol["chunk_size"]),
        initial_timestamp=datetime.fromisoformat(meta["time"]["initial"]),
        start=datetime.fromisoformat(meta["time"]["start"]),
        end=datetime.fromisoformat(meta["time"]["end"]),
        supervoxels=int(vol["supervoxels"]),
        edits=int(graph["edits"]),
        edit_timestamps=[from_us(t) for t in edits.tolist()],
        tables={name: directory / t["folder"] for name, t in meta["tables"].items()},
    )


def info_as_json(info: DatasetInfo) -> dict:
    """JSON-friendly dict of a :class:`DatasetInfo` (paths and datetimes as strings)."""
    out = asdict(info)
    out.pop("edit_timestamps")
    for k, v in list(out.items()):
        if isinstance(v, Path):
            out[k] = str(v)
        elif isinstance(v, datetime):
            out[k] = v.isoformat()
    out["tables"] = {k: str(v) for k, v in info.tables.items()}
    return out
