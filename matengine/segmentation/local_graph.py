"""The built-in edit-log graph (``local://PATH``): a :class:`RootGraph` from files.

File format: see :mod:`matengine.segmentation.local_format` (and the package README).
The log is replayed once at open (:mod:`local_index`); every query is then a vectorised
search over sorted arrays. Besides the :class:`RootGraph` protocol it offers the extras
the PCG-compatible server needs (root intervals, PCG-style delta candidates, lineage
graph in networkx node-link form).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

import numpy as np

from matengine.segmentation.local_format import file_stamp, read_graph
from matengine.segmentation.local_index import GraphIndex, build_index
from matengine.segmentation.timecodes import NEVER, from_us, to_us, us_to_seconds


class LocalGraph:
    """Exact chunkedgraph answers from an initial assignment plus an edit log."""

    def __init__(self, directory: str | Path) -> None:
        # Stamp before reading: if an edit lands in between, the stamp is older than the
        # content and the next check reopens (never the reverse).
        self.stamp = file_stamp(directory)
        self.files = read_graph(directory)
        self.index: GraphIndex = build_index(self.files)
        self.name = self.files.name
        self.n_layers = self.files.n_layers
        self.supervoxels_url = self.files.supervoxels_url
        self.resolution = self.files.resolution
        self._snapshots: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._leaves: tuple[np.ndarray, np.ndarray] | None = None
        ix = self.index
        # Edges re-sorted by child once, so parent lookups are a binary search.
        self._child_sorted = ix.edge_child[ix.edge_child_order]
        self._parent_by_child = ix.edge_parent[ix.edge_child_order]

    # ---------------------------------------------------------------- roots at T
    def _snapshot(self, t_us: int) -> np.ndarray:
        """Root of every known supervoxel at ``t_us`` (0 before the graph existed)."""
        with self._lock:
            snap = self._snapshots.get(t_us)
            if snap is not None:
                self._snapshots.move_to_end(t_us)
                return snap
        ix = self.index
        live = (ix.rec_t <= t_us) & (ix.rec_tend > t_us)
        snap = np.zeros(len(ix.sv_sorted), np.uint64)
        snap[ix.rec_idx[live]] = ix.rec_root[live]
        with self._lock:
            self._snapshots[t_us] = snap
            while len(self._snapshots) > 8:  # a few recent T's: workflows reuse one T
                self._snapshots.popitem(last=False)
        return snap

    def get_roots(self, svids: np.ndarray, timestamp: datetime) -> np.ndarray:
        svids = np.asarray(svids, dtype=np.uint64).ravel()
        pos, found = self.index.dense(svids)
        out = np.zeros(len(svids), np.uint64)
        if found.any():
            out[found] = self._snapshot(to_us(timestamp))[pos[found]]
        return out

    # ---------------------------------------------------------------- root table
    def root_intervals(self, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(created_us, expired_us, known) per id; unknown ids get (NEVER, NEVER, False)."""
        pos, found = self.index.root_pos(roots)
        created = np.where(found, self.index.root_created[pos] if len(pos) else 0, NEVER)
        expired = np.where(found, self.index.root_expired[pos] if len(pos) else 0, NEVER)
        return created.astype(np.int64), expired.astype(np.int64), found

    def is_latest_roots(self, roots: np.ndarray, timestamp: datetime) -> np.ndarray:
        t = to_us(timestamp)
        created, expired, known = self.root_intervals(np.asarray(roots, np.uint64).ravel())
        return known & (created <= t) & (expired > t)

    def get_root_timestamps(self, roots: np.ndarray) -> list[datetime]:
        roots = np.asarray(roots, np.uint64).ravel()
        created, _, known = self.root_intervals(roots)
        if not known.all():
            raise KeyError(f"unknown root id {int(roots[~known][0])}")
        return [from_us(c) for c in created.tolist()]

    def get_delta_roots(self, t0: datetime, t1: datetime) -> tuple[np.ndarray, np.ndarray]:
        a, b = to_us(t0), to_us(t1)
        ix = self.index
        valid0 = (ix.root_created <= a) & (ix.root_expired > a)
        valid1 = (ix.root_created <= b) & (ix.root_expired > b)
        return ix.root_ids[valid0 & ~valid1], ix.root_ids[valid1 & ~valid0]

    def candidate_delta_roots(self, t0_us: int, t1_us: int) -> tuple[np.ndarray, np.ndarray]:
        """What a PyChunkedGraph ``delta_roots`` returns: roots retired / created by every
        edit with ``t0 <= t <= t1`` -- a superset of the exact answer (a root born and
        retired in the window is in both lists). The graph's creation counts as an edit
        creating the initial roots, so windows starting before it stay exact."""
        ix = self.index
        new_mask = (ix.root_created >= t0_us) & (ix.root_created <= t1_us)
        old_mask = (ix.root_expired_op >= 0) & (ix.root_expired >= t0_us) & (ix.root_expired <= t1_us)
        return ix.root_ids[old_mask], ix.root_ids[new_mask]

    # ---------------------------------------------------------------- lineage
    def _parents(self, node: int) -> np.ndarray:
        ch, key = self._child_sorted, np.uint64(node)
        lo, hi = np.searchsorted(ch, key), np.searchsorted(ch, key, "right")
        return self._parent_by_child[lo:hi]

    def _children(self, node: int) -> np.ndarray:
        ix = self.index
        lo = np.searchsorted(ix.edge_parent, np.uint64(node))
        hi = np.searchsorted(ix.edge_parent, np.uint64(node), "right")
        return ix.edge_child[lo:hi]

    def _walk(self, root: int, t: int, backwards: bool) -> np.ndarray:
        """Roots valid at ``t`` reached from ``root`` through the lineage DAG."""
        found: set[int] = set()
        frontier, seen = [root], {root}
        while frontier:
            nxt: list[int] = []
            arr = np.asarray(frontier, np.uint64)
            created, expired, known = self.root_intervals(arr)
            for node, c, x, k in zip(
                frontier, created.tolist(), expired.tolist(), known.tolist(), strict=True
            ):
                if not k:
                    continue
                if c <= t < x:
                    found.add(node)
                elif backwards and c > t:  # born after t: its parents may be valid at t
                    nxt.extend(int(p) for p in self._parents(node) if int(p) not in seen)
                elif not backwards and x <= t:  # retired by t: its children may be valid
                    nxt.extend(int(p) for p in self._children(node) if int(p) not in seen)
            seen.update(nxt)
            frontier = nxt
        return np.array(sorted(found), np.uint64)

    def get_past_ids(self, roots: np.ndarray, t_past: datetime) -> dict[int, np.ndarray]:
        t = to_us(t_past)
        return {int(r): self._walk(int(r), t, True) for r in np.asarray(roots, np.uint64).ravel()}

    def get_future_ids(self, roots: np.ndarray, t_future: datetime) -> dict[int, np.ndarray]:
        t = to_us(t_future)
        return {int(r): self._walk(int(r), t, False) for r in np.asarray(roots, np.uint64).ravel()}

    def lineage_graph(self, roots: np.ndarray, t_past_us: int, t_future_us: int) -> dict:
        """networkx node-link dict, traversed as PyChunkedGraph does: backwards from a node
        created at or after ``t_past``, forwards from a node created at or before
        ``t_future`` (so one step beyond each bound is included)."""
        nodes: dict[int, dict] = {}
        links: set[tuple[int, int]] = set()
        past = [int(r) for r in np.asarray(roots, np.uint64).ravel()]
        future = list(past)
        while past or future:
            nxt_past, nxt_future = [], []
            for node in past:
                info = self._node_info(node)
                if info is None:
                    continue
                nodes[node] = info
                if self._created_us(node) < t_past_us:
                    continue
                for p in map(int, self._parents(node)):
                    links.add((p, node))
                    if p not in nodes:
                        nxt_past.append(p)
            for node in future:
                info = self._node_info(node)
                if info is None:
                    continue
                nodes[node] = info
                if self._created_us(node) > t_future_us:
                    continue
                for c in map(int, self._children(node)):
                    links.add((node, c))
                    if c not in nodes:
                        nxt_future.append(c)
            past, future = sorted(set(nxt_past)), sorted(set(nxt_future))
        return {
            "directed": True,
            "multigraph": False,
            "graph": {},
            "nodes": [{"id": k, **v} for k, v in sorted(nodes.items())],
            "links": [{"source": s, "target": t} for s, t in sorted(links)],
        }

    def _created_us(self, node: int) -> int:
        pos, _ = self.index.root_pos(np.array([node], np.uint64))
        return int(self.index.root_created[pos[0]])

    def _node_info(self, node: int) -> dict | None:
        ix = self.index
        pos, found = ix.root_pos(np.array([node], np.uint64))
        if not found[0]:
            return None
        p = pos[0]
        info: dict = {"timestamp": us_to_seconds(int(ix.root_created[p]))}
        if ix.root_expired_op[p] >= 0:
            info["operation_id"] = int(ix.edit_op[ix.root_expired_op[p]])
        return info

    # ---------------------------------------------------------------- leaves
    def get_leaves(self, root: int, timestamp: datetime | None = None) -> np.ndarray:
        ix = self.index
        if self._leaves is None:  # built on first use: most workflows never ask for leaves
            order = np.argsort(ix.rec_root, kind="stable")
            self._leaves = (ix.rec_root[order], ix.sv_sorted[ix.rec_idx[order]])
        sorted_roots, svs = self._leaves
        r = np.uint64(root)
        lo, hi = np.searchsorted(sorted_roots, r), np.searchsorted(sorted_roots, r, "right")
        return np.sort(svs[lo:hi])

    @property
    def supervoxel_ids(self) -> np.ndarray:
        return self.index.sv_sorted
