"""Synthetic supervoxel volume: a random rectilinear grid of blocks.

Each axis is cut at random positions; every block of the resulting grid is one supervoxel
(or label 0 for a few percent of blocks, standing in for membrane/background). The label
of any voxel is therefore pure arithmetic (three binary searches and a table lookup),
which lets the generator label millions of annotation points without reading the volume
back, while the oracle reads the written volume independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matengine.segmentation.local_format import make_supervoxel_id

ZERO_FRACTION = 0.03


@dataclass
class BlockGrid:
    offset: np.ndarray  # int64 (3,) voxel offset of the volume
    size: np.ndarray  # int64 (3,)
    cuts: tuple[np.ndarray, np.ndarray, np.ndarray]  # local cut positions per axis
    table: np.ndarray  # uint64 (nx, ny, nz) label of each block

    def labels_at(self, vox: np.ndarray) -> np.ndarray:
        """Label at global voxels (N, 3); 0 outside the volume."""
        vox = np.asarray(vox, np.int64)
        local = vox - self.offset
        inside = np.all((local >= 0) & (local < self.size), axis=1)
        out = np.zeros(len(vox), np.uint64)
        loc = local[inside]
        ix = [np.searchsorted(self.cuts[a], loc[:, a], side="right") for a in range(3)]
        out[inside] = self.table[ix[0], ix[1], ix[2]]
        return out

    def block(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Labels of the global voxel box [lo, hi) (must lie inside the volume)."""
        idx = [
            np.searchsorted(self.cuts[a], np.arange(lo[a], hi[a]) - self.offset[a], side="right")
            for a in range(3)
        ]
        return self.table[np.ix_(idx[0], idx[1], idx[2])]

    @property
    def supervoxel_ids(self) -> np.ndarray:
        ids = self.table.ravel()
        return np.sort(ids[ids != 0])


def _grid_shape(size: np.ndarray, blocks: int) -> np.ndarray:
    """Blocks per axis: roughly cubic blocks, product >= ``blocks``."""
    if blocks > int(np.prod(size)):
        raise ValueError(f"{blocks} supervoxels do not fit in a volume of {size.tolist()} voxels")
    edge = (float(np.prod(size)) / blocks) ** (1 / 3)
    ideal = np.clip(size / edge, 1, size)
    best, best_score = None, None

    # Search y/z counts near the ideal and solve x. Score: excess blocks (they become
    # extra label 0) first, then how far from cubic the blocks are.
    def span(a: int) -> range:
        lo, hi = max(1, int(ideal[a] * 0.6)), min(int(size[a]), int(ideal[a] * 1.6) + 1)
        return range(lo, hi + 1)

    for ny in span(1):
        for nz in span(2):
            nx = -(-blocks // (ny * nz))
            if nx > size[0]:
                continue
            n = np.array([nx, ny, nz], np.int64)
            excess = n.prod() / blocks - 1
            shape = float(np.abs(np.log(n / ideal)).sum())
            score = (round(max(excess, 0.01), 2), shape)
            if best_score is None or score < best_score:
                best, best_score = n, score
    if best is None:
        raise ValueError(f"cannot fit {blocks} blocks in {size.tolist()}")
    return best


def make_grid(offset, size, supervoxels: int, rng: np.random.Generator) -> BlockGrid:
    size = np.asarray(size, np.int64)
    blocks = int(np.ceil(supervoxels / (1 - ZERO_FRACTION)))
    n = _grid_shape(size, blocks)
    cx, cy, cz = (
        np.sort(rng.choice(np.arange(1, size[a]), n[a] - 1, replace=False))
        if n[a] > 1
        else np.zeros(0, np.int64)
        for a in range(3)
    )
    total = int(np.prod(n))
    labels = np.zeros(total, np.uint64)
    chosen = rng.permutation(total)[:supervoxels]  # the rest of the blocks stay label 0
    labels[chosen] = make_supervoxel_id(np.arange(1, supervoxels + 1, dtype=np.uint64))
    return BlockGrid(np.asarray(offset, np.int64), size, (cx, cy, cz), labels.reshape(tuple(n)))


def write_volume(path: Path, grid: BlockGrid, resolution, chunk_size) -> str:
    """Write the grid as a precomputed compressed_segmentation volume; returns its URL."""
    from cloudvolume import CloudVolume

    url = "file://" + str(Path(path).resolve())
    chunk = np.asarray(chunk_size, np.int64)
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type="uint64",
        encoding="compressed_segmentation",
        resolution=[float(r) for r in resolution],
        voxel_offset=grid.offset.tolist(),
        volume_size=grid.size.tolist(),
        chunk_size=chunk.tolist(),
        compressed_segmentation_block_size=[8, 8, 8],
    )
    cv = CloudVolume(url, info=info, progress=False)
    cv.commit_info()
    stop = grid.offset + grid.size
    # Whole-chunk writes in slabs of chunk rows: bounded memory at any volume size.
    for z0 in range(int(grid.offset[2]), int(stop[2]), int(chunk[2])):
        z1 = min(z0 + int(chunk[2]), int(stop[2]))
        for y0 in range(int(grid.offset[1]), int(stop[1]), int(chunk[1])):
            y1 = min(y0 + int(chunk[1]), int(stop[1]))
            lo = np.array([grid.offset[0], y0, z0])
            hi = np.array([stop[0], y1, z1])
            cv[int(lo[0]) : int(hi[0]), y0:y1, z0:z1] = grid.block(lo, hi)
    return url
