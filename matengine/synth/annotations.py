"""Synthetic annotation tables as ``.npy`` column files plus ``column_mapping.json``.

The ``synapses`` folder follows the bulk-upload example of the seed document exactly; the
``cells`` folder is a single-point ``cell_type_local`` table with no segmentation columns
(so it exercises the ingest workflow). Columns are written through memory-mapped ``.npy``
files in row chunks, so memory stays flat up to 10M+ rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

SYNAPSE_MAPPING = {
    "id": "id",
    "presyn_coords": "pre_pt_position",
    "center_coords": "ctr_pt_position",
    "postsyn_coords": "post_pt_position",
    "sizes": "size",
    "sv_ids_ordered": ["pre_pt_supervoxel_id", "post_pt_supervoxel_id"],
    "root_ids_ordered": ["pre_pt_root_id", "post_pt_root_id"],
}
CELL_MAPPING = {
    "id": "id",
    "pt_position": "pt_position",
    "cell_type": "cell_type",
    "classification_system": "classification_system",
}
CELL_TYPES = np.array(
    ["pyramidal", "basket", "chandelier", "martinotti", "astrocyte", "microglia", "unknown"]
)
CLASSIFICATION_SYSTEMS = np.array(["morphological", "functional"])
OUTSIDE_FRACTION = 0.02
CHUNK_ROWS = 1_000_000

LabelFn = Callable[[np.ndarray], np.ndarray]  # annotation points -> supervoxel ids


def _column(folder: Path, name: str, dtype, shape: tuple[int, ...]) -> np.memmap:
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


def random_points(count: int, box_lo: np.ndarray, box_hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer points in [box_lo, box_hi); a few are pushed outside the box on purpose."""
    pts = rng.integers(box_lo, box_hi, size=(count, 3), dtype=np.int64)
    out = rng.random(count) < OUTSIDE_FRACTION
    if out.any():
        axis = rng.integers(0, 3, size=int(out.sum()))
        extent = box_hi - box_lo
        shifted = pts[out]
        # Half go below the box, half beyond its end, by up to a quarter of its extent.
        below = rng.random(len(shifted)) < 0.5
        delta = 1 + (rng.random(len(shifted)) * extent[axis] / 4).astype(np.int64)
        rows = np.arange(len(shifted))
        shifted[rows, axis] = np.where(below, box_lo[axis] - delta, box_hi[axis] - 1 + delta)
        pts[out] = shifted
    return pts


def write_synapses(
    folder: Path,
    count: int,
    box_lo,
    box_hi,
    labels: LabelFn,
    roots_at_initial: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols = {
        "id": _column(folder, "id", np.int64, (count,)),
        "presyn_coords": _column(folder, "presyn_coords", np.int64, (count, 3)),
        "center_coords": _column(folder, "center_coords", np.int64, (count, 3)),
        "postsyn_coords": _column(folder, "postsyn_coords", np.int64, (count, 3)),
        "sizes": _column(folder, "sizes", np.float64, (count,)),
        "sv_ids_ordered": _column(folder, "sv_ids_ordered", np.uint64, (count, 2)),
        "root_ids_ordered": _column(folder, "root_ids_ordered", np.uint64, (count, 2)),
    }
    box_lo, box_hi = np.asarray(box_lo, np.int64), np.asarray(box_hi, np.int64)
    for start in range(0, count, CHUNK_ROWS):
        stop = min(count, start + CHUNK_ROWS)
        n = stop - start
        pre = random_points(n, box_lo, box_hi, rng)
        # Post-synaptic point a short, anisotropic hop away (z sections are thick).
        post = pre + rng.integers([-20, -20, -2], [21, 21, 3], size=(n, 3))
        cols["id"][start:stop] = np.arange(start + 1, stop + 1)
        cols["presyn_coords"][start:stop] = pre
        cols["postsyn_coords"][start:stop] = post
        cols["center_coords"][start:stop] = (pre + post) // 2
        cols["sizes"][start:stop] = np.round(rng.gamma(2.0, 150.0, size=n), 1)
        sv = np.stack([labels(pre), labels(post)], axis=1)
        cols["sv_ids_ordered"][start:stop] = sv
        cols["root_ids_ordered"][start:stop] = roots_at_initial(sv.ravel()).reshape(n, 2)
    for col in cols.values():
        col.flush()
    (folder / "column_mapping.json").write_text(json.dumps(SYNAPSE_MAPPING, indent=2))


def write_cells(folder: Path, count: int, box_lo, box_hi, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    box_lo, box_hi = np.asarray(box_lo, np.int64), np.asarray(box_hi, np.int64)
    np.save(folder / "id.npy", np.arange(1, count + 1, dtype=np.int64))
    np.save(folder / "pt_position.npy", random_points(count, box_lo, box_hi, rng))
    np.save(folder / "cell_type.npy", CELL_TYPES[rng.integers(len(CELL_TYPES), size=count)])
    np.save(
        folder / "classification_system.npy",
        CLASSIFICATION_SYSTEMS[rng.integers(len(CLASSIFICATION_SYSTEMS), size=count)],
    )
    (folder / "column_mapping.json").write_text(json.dumps(CELL_MAPPING, indent=2))
