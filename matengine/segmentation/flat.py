"""Flat segmentations (``precomputed://…``): root id = supervoxel id = segment id.

Nothing is ever edited, so every root is valid from the beginning of time to forever:
delta roots are empty and ``is_latest`` is true for every non-zero id.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from matengine.segmentation.timecodes import EPOCH, NEVER, us_to_seconds


class FlatGraph:
    """:class:`~matengine.segmentation.base.RootGraph` of a segmentation with no agglomeration."""

    n_layers = 1

    def get_roots(self, svids: np.ndarray, timestamp: datetime) -> np.ndarray:
        return np.asarray(svids, dtype=np.uint64).ravel().copy()

    def get_delta_roots(self, t0: datetime, t1: datetime) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, np.uint64)
        return empty, empty.copy()

    def is_latest_roots(self, roots: np.ndarray, timestamp: datetime) -> np.ndarray:
        return np.asarray(roots, dtype=np.uint64).ravel() != 0

    def get_root_timestamps(self, roots: np.ndarray) -> list[datetime]:
        roots = np.asarray(roots, dtype=np.uint64).ravel()
        if np.any(roots == 0):
            raise KeyError("0 is not a segment id")
        # A flat segment exists "since always": the epoch is the earliest representable time.
        return [EPOCH] * len(roots)

    def get_past_ids(self, roots: np.ndarray, t_past: datetime) -> dict[int, np.ndarray]:
        return {int(r): np.array([r], np.uint64) for r in np.asarray(roots, np.uint64).ravel()}

    def get_future_ids(self, roots: np.ndarray, t_future: datetime) -> dict[int, np.ndarray]:
        return self.get_past_ids(roots, t_future)

    def get_leaves(self, root: int, timestamp: datetime | None = None) -> np.ndarray:
        return np.array([root], np.uint64)

    # -- extras used by the PCG-compatible server
    def root_intervals(self, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        roots = np.asarray(roots, dtype=np.uint64).ravel()
        known = roots != 0
        return (np.where(known, 0, NEVER).astype(np.int64), np.full(len(roots), NEVER, np.int64), known)

    def candidate_delta_roots(self, t0_us: int, t1_us: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)

    def lineage_graph(self, roots: np.ndarray, t_past_us: int, t_future_us: int) -> dict:
        nodes = [
            {"id": int(r), "timestamp": us_to_seconds(0)}
            for r in sorted(set(np.asarray(roots, np.uint64).tolist()))
            if r
        ]
        return {"directed": True, "multigraph": False, "graph": {}, "nodes": nodes, "links": []}
