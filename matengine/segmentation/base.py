"""The two interfaces every segmentation source implements, and their bundle.

* :class:`SupervoxelSource` answers "which supervoxel is under this point" from the
  supervoxel volume (never changes).
* :class:`RootGraph` answers "which root (neuron) contains this supervoxel at time T" and
  the time questions around it (what changed between two times, lineage).

**The time rule** (docs/design.md §3), obeyed by every backend: an edit with timestamp ``t`` is
part of the state at ``T`` iff ``t <= T``. A root created by an edit at ``t`` is therefore
*valid* at ``T`` iff ``created <= T < expired`` (``expired`` = timestamp of the edit that
retired it, or never). Timestamps are compared at microsecond resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class VolumeBounds:
    """Voxel bounding box of a volume in its own global voxel coordinates.

    ``offset`` is the first voxel, ``size`` the extent; the chunk grid starts at ``offset``
    (precomputed convention).
    """

    offset: np.ndarray  # int64 (3,)
    size: np.ndarray  # int64 (3,)
    chunk_size: np.ndarray  # int64 (3,)

    @property
    def stop(self) -> np.ndarray:
        return self.offset + self.size


@dataclass
class LookupResult:
    """Answer of :meth:`SupervoxelSource.lookup`.

    ``supervoxel_ids[i]`` is 0 when point ``i`` has a NaN coordinate (counted in ``nan``),
    lies outside the volume (``outside``) or on label 0 (``label0``). A point is counted in
    exactly one of these, checked in that order.
    """

    supervoxel_ids: np.ndarray  # uint64 (N,)
    outside: int = 0
    nan: int = 0
    label0: int = 0
    chunks_read: int = 0

    @property
    def missing(self) -> int:
        """Points that got no supervoxel, for any reason."""
        return self.outside + self.nan + self.label0


@runtime_checkable
class SupervoxelSource(Protocol):
    """Point → supervoxel lookups on a precomputed supervoxel volume."""

    resolution: np.ndarray  # float64 (3,), nm per voxel of the segmentation (mip 0)
    bounds: VolumeBounds
    cloudpath: str  # the precomputed volume, as CloudVolume reads it

    def lookup(self, points: np.ndarray, points_resolution: Sequence[float]) -> LookupResult:
        """Supervoxel id under each point.

        ``points`` is (N, 3), in voxels of ``points_resolution`` (nm). The voxel of a point
        is ``floor(point * points_resolution / resolution)`` in the volume's global voxel
        coordinates (voxel offset included).
        """
        ...


@runtime_checkable
class RootGraph(Protocol):
    """Supervoxel → root mapping over time (a chunkedgraph, an edit log, or flat)."""

    def get_roots(self, svids: np.ndarray, timestamp: datetime) -> np.ndarray:
        """uint64 root of each supervoxel in the state at ``timestamp``.

        Order preserved; supervoxel 0 and unknown supervoxels give 0.
        """
        ...

    def get_delta_roots(self, t0: datetime, t1: datetime) -> tuple[np.ndarray, np.ndarray]:
        """``(expired, new)`` between ``t0 <= t1``, both sorted unique uint64.

        ``expired`` = roots valid at ``t0`` and not at ``t1``; ``new`` = roots valid at ``t1``
        and not at ``t0``. A root created and retired between the two is in neither.
        """
        ...

    def is_latest_roots(self, roots: np.ndarray, timestamp: datetime) -> np.ndarray:
        """bool per id: is it a root valid at ``timestamp`` (created <= T < expired)?

        Unknown ids, 0, and roots created after ``timestamp`` give False.
        """
        ...

    def get_root_timestamps(self, roots: np.ndarray) -> list[datetime]:
        """Creation time (aware UTC) of each root; raises ``KeyError`` for an unknown id."""
        ...

    def get_past_ids(self, roots: np.ndarray, t_past: datetime) -> dict[int, np.ndarray]:
        """For each root, the roots valid at ``t_past`` from which it descends.

        A root valid at ``t_past`` maps to itself. The answer contains every root at
        ``t_past`` sharing a supervoxel with the given root (it may contain more: lineage,
        not overlap). Sorted uint64 arrays, keyed by ``int(root)``.
        """
        ...

    def get_future_ids(self, roots: np.ndarray, t_future: datetime) -> dict[int, np.ndarray]:
        """For each root, the roots valid at ``t_future`` that descend from it (or itself)."""
        ...

    def get_leaves(self, root: int, timestamp: datetime | None = None) -> np.ndarray:
        """Sorted uint64 supervoxels of ``root``.

        A root id never changes content once created, so ``timestamp`` does not change the
        answer; it is accepted for symmetry with chunkedgraph clients.
        """
        ...


@dataclass
class Segmentation:
    """A segmentation source opened from its URL: supervoxels + roots.

    ``name`` is the PCG table name (last path component of the URL); ``flat`` is True for
    ``precomputed://`` sources where root id == supervoxel id and nothing ever expires.
    """

    supervoxels: SupervoxelSource
    roots: RootGraph
    url: str
    name: str
    flat: bool
    extra: dict = field(default_factory=dict)
