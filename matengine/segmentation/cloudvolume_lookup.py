"""Point -> supervoxel lookups on a precomputed volume, read with CloudVolume.

The fast path groups points by the volume's chunk grid, reads each touched chunk once
(one cutout per chunk, chunks read concurrently) and answers all of that chunk's points by
numpy indexing. Reading a chunk costs the same whether one point or ten thousand fall in
it, so grouping is what makes 1M-point ingests cheap. :func:`lookup_one_cutout_per_point`
is the naive approach, kept only as the benchmark baseline.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from matengine.errors import SegmentationSourceError
from matengine.segmentation.base import LookupResult, VolumeBounds


def strip_precomputed(url: str) -> str:
    """CloudVolume path of a ``precomputed://…`` URL (the scheme prefix is optional)."""
    return url[len("precomputed://") :] if url.startswith("precomputed://") else url


def open_cloudvolume(cloudpath: str, secrets: str | dict | None = None):
    """A read-only CloudVolume at mip 0: no progress bars, missing chunks read as 0."""
    from cloudvolume import CloudVolume

    try:
        return CloudVolume(
            strip_precomputed(cloudpath),
            mip=0,
            progress=False,
            fill_missing=True,
            bounded=False,
            secrets=secrets,
            cache=False,
        )
    except Exception as exc:  # CloudVolume raises many types; callers need one
        raise SegmentationSourceError(f"cannot open volume {cloudpath}: {exc}") from exc


def points_to_voxels(
    points: np.ndarray, points_resolution: Sequence[float] | np.ndarray, resolution: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(voxels int64 (N,3), nan mask) with voxel = floor(point * points_res / seg_res).

    Multiply first, then divide, exactly as written: ``p * (a / b)`` can land just below an
    integer (7 * (3/7) < 3) and floor one voxel too low.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    nan = np.asarray(~np.isfinite(pts).all(axis=1))
    scaled = pts * np.asarray(points_resolution, np.float64) / np.asarray(resolution, np.float64)
    vox = np.zeros(pts.shape, np.int64)
    vox[~nan] = np.floor(scaled[~nan]).astype(np.int64)
    return vox, nan


class CloudVolumeSupervoxels:
    """:class:`~matengine.segmentation.base.SupervoxelSource` over any CloudVolume path
    (file://, gs://, s3://, http(s)://)."""

    def __init__(self, cloudpath: str, *, parallel: int = 4, secrets: str | dict | None = None) -> None:
        self.cloudpath = strip_precomputed(cloudpath)
        self._secrets = secrets
        self._cv = open_cloudvolume(self.cloudpath, secrets)
        self.info: dict = self._cv.info
        self.resolution = np.asarray(self._cv.resolution, dtype=np.float64)
        self.bounds = VolumeBounds(
            offset=np.asarray(self._cv.voxel_offset, np.int64),
            size=np.asarray(self._cv.volume_size, np.int64),
            chunk_size=np.asarray(self._cv.chunk_size, np.int64),
        )
        self.parallel = max(1, int(parallel))
        self._local = threading.local()
        self._cseg = _local_cseg_scale(self.cloudpath, self.info, self._cv.key)
        # one pool for the life of the source: its threads keep their CloudVolumes, so a
        # lookup of a few points (a posted annotation) opens nothing
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="matengine-cv")
            return self._pool

    def _volume(self):
        # One CloudVolume per thread: its caches and connection pools are not shared safely.
        cv = getattr(self._local, "cv", None)
        if cv is None:
            cv = self._local.cv = open_cloudvolume(self.cloudpath, self._secrets)
        return cv

    def _read(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        cv = self._volume()
        img = cv[int(lo[0]) : int(hi[0]), int(lo[1]) : int(hi[1]), int(lo[2]) : int(hi[2])]
        return np.asarray(img)[..., 0]

    def _chunk_values(self, lo: np.ndarray, hi: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Labels at ``local`` voxels (relative to ``lo``) of the chunk ``[lo, hi)``."""
        if self._cseg is not None:
            values = self._cseg.values(lo, hi, local)
            if values is not None:
                return values
        block = self._read(lo, hi)
        return block[local[:, 0], local[:, 1], local[:, 2]]

    def _classify(self, points, points_resolution):
        vox, nan = points_to_voxels(points, points_resolution, self.resolution)
        b = self.bounds
        inside = ~nan & np.all((vox >= b.offset) & (vox < b.stop), axis=1)
        return vox, nan, inside

    def lookup(self, points: np.ndarray, points_resolution: Sequence[float]) -> LookupResult:
        vox, nan, inside = self._classify(points, points_resolution)
        out = np.zeros(len(vox), np.uint64)
        idx = np.flatnonzero(inside)
        chunks_read = 0
        if len(idx):
            b = self.bounds
            cidx = (vox[idx] - b.offset) // b.chunk_size
            grid = (b.size + b.chunk_size - 1) // b.chunk_size
            key = (cidx[:, 0] * grid[1] + cidx[:, 1]) * grid[2] + cidx[:, 2]
            order = np.argsort(key, kind="stable")
            key_sorted = key[order]
            starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
            ends = np.r_[starts[1:], len(order)]
            groups = [(idx[order[s:e]], cidx[order[s]]) for s, e in zip(starts, ends, strict=True)]
            chunks_read = len(groups)

            def answer(group) -> None:
                pts, ci = group
                lo = b.offset + ci * b.chunk_size
                hi = np.minimum(lo + b.chunk_size, b.stop)
                # Distinct points write distinct slots of `out`: safe across threads.
                out[pts] = self._chunk_values(lo, hi, vox[pts] - lo)

            if self.parallel > 1 and len(groups) > 1:
                list(self._executor().map(answer, groups))
            else:
                for g in groups:
                    answer(g)
        label0 = int(np.count_nonzero(inside & (out == 0)))
        return LookupResult(
            supervoxel_ids=out,
            outside=int(np.count_nonzero(~nan & ~inside)),
            nan=int(np.count_nonzero(nan)),
            label0=label0,
            chunks_read=chunks_read,
        )


class LocalCompressedSegmentation:
    """Chunks of a ``file://`` precomputed scale in ``compressed_segmentation`` encoding, read
    straight from their files: a few points of a chunk are answered from the encoded chunk
    without decoding it (``CompressedSegmentationArray``), many by one decode in C. CloudVolume
    decodes the whole chunk into an array for every cutout, ~20x the cost for a lone point;
    this is what makes ingesting a posted annotation cheap."""

    # above this many points in one chunk, decoding the chunk once is cheaper than point reads
    FULL_DECODE_POINTS = 64

    def __init__(self, directory: Path, dtype: np.dtype, block_size: tuple[int, int, int]) -> None:
        self.directory, self.dtype, self.block_size = directory, dtype, block_size

    def values(self, lo: np.ndarray, hi: np.ndarray, local: np.ndarray) -> np.ndarray | None:
        """Labels at ``local``; None when the chunk's file is in a form not handled here."""
        import compressed_segmentation as cseg

        name = f"{lo[0]}-{hi[0]}_{lo[1]}-{hi[1]}_{lo[2]}-{hi[2]}"
        path = self.directory / name
        gz = self.directory / f"{name}.gz"
        if gz.is_file():
            raw = _gunzip(gz.read_bytes())
        elif path.is_file():
            raw = path.read_bytes()
        elif any(self.directory.glob(f"{name}.*")):
            return None  # another compression: CloudVolume knows it
        else:
            return np.zeros(len(local), self.dtype)  # a missing chunk reads as 0 (fill_missing)
        shape = tuple(int(v) for v in hi - lo)
        if len(local) > self.FULL_DECODE_POINTS:
            block = cseg.decompress(raw, shape, self.dtype, self.block_size, order="F")
            return np.asarray(block[local[:, 0], local[:, 1], local[:, 2]], self.dtype).reshape(-1)
        arr = cseg.CompressedSegmentationArray(raw, shape=shape, dtype=self.dtype, block_size=self.block_size)
        return np.fromiter((arr[int(x), int(y), int(z)] for x, y, z in local), self.dtype, len(local))


def _gunzip(data: bytes) -> bytes:
    """libdeflate where installed (a dependency of cloud-files), else the standard library."""
    try:
        import deflate
    except ImportError:  # pragma: no cover - deflate ships with cloud-files
        return gzip.decompress(data)
    return bytes(deflate.gzip_decompress(data))


def _local_cseg_scale(cloudpath: str, info: dict, key: str) -> LocalCompressedSegmentation | None:
    """The direct reader for an unsharded, single-channel ``compressed_segmentation`` scale
    on the local disk; None for anything else (CloudVolume reads it)."""
    if not cloudpath.startswith("file://") or info.get("num_channels", 1) != 1:
        return None
    scale = next((sc for sc in info.get("scales", []) if sc.get("key") == key), None)
    if scale is None or scale.get("encoding") != "compressed_segmentation" or scale.get("sharding"):
        return None
    dtype = np.dtype(info.get("data_type", ""))
    if dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        return None
    block = tuple(int(v) for v in scale.get("compressed_segmentation_block_size", (8, 8, 8)))
    directory = Path(cloudpath[len("file://") :]) / key
    return LocalCompressedSegmentation(directory, dtype, (block[0], block[1], block[2]))


def lookup_one_cutout_per_point(
    source: CloudVolumeSupervoxels, points: np.ndarray, points_resolution: Sequence[float]
) -> LookupResult:
    """Benchmark baseline: one 1-voxel cutout per point (what per-annotation code does)."""
    vox, nan, inside = source._classify(points, points_resolution)
    out = np.zeros(len(vox), np.uint64)
    for i in np.flatnonzero(inside):
        v = vox[i]
        out[i] = source._read(v, v + 1)[0, 0, 0]
    return LookupResult(
        supervoxel_ids=out,
        outside=int(np.count_nonzero(~nan & ~inside)),
        nan=int(np.count_nonzero(nan)),
        label0=int(np.count_nonzero(inside & (out == 0))),
        chunks_read=int(np.count_nonzero(inside)),
    )
