"""Replay an edit log once into sorted arrays that answer every time query by search.

The index holds

* a **membership history**: one record ``(supervoxel, root, t_start, t_end)`` each time a
  supervoxel joins a new root (initial assignment, or an edit creating the root it lands
  in), sorted by (supervoxel, t_start). The root of ``sv`` at ``T`` is the record with
  ``t_start <= T < t_end``: one vectorised mask, no per-id Python.
* a **root table**: every root with its validity interval ``[created, expired)`` and the
  edit that created / retired it.
* the **lineage edges** (retired root -> new root) of every edit.

Cost is proportional to the total size of the roots created by edits, which is what a
flat (non-hierarchical) graph must pay; replay is a single pass over the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matengine.errors import GraphFormatError
from matengine.segmentation.local_format import MERGE, SPLIT, GraphFiles
from matengine.segmentation.timecodes import NEVER


@dataclass
class GraphIndex:
    sv_sorted: np.ndarray  # uint64 (N,) known supervoxels
    rec_idx: np.ndarray  # int64 (R,) dense supervoxel index, records sorted by (idx, t)
    rec_root: np.ndarray  # uint64 (R,)
    rec_t: np.ndarray  # int64 (R,) µs
    rec_tend: np.ndarray  # int64 (R,) µs (NEVER if still current)
    root_ids: np.ndarray  # uint64 (M,) sorted
    root_created: np.ndarray  # int64 (M,)
    root_expired: np.ndarray  # int64 (M,)
    root_created_op: np.ndarray  # int64 (M,) edit index, -1 for initial roots
    root_expired_op: np.ndarray  # int64 (M,) edit index, -1 if never retired
    edge_parent: np.ndarray  # uint64 (K,) sorted by parent
    edge_child: np.ndarray  # uint64 (K,)
    edge_child_order: np.ndarray  # int64 (K,) permutation sorting edges by child
    edit_t: np.ndarray  # int64 (E,)
    edit_op: np.ndarray  # uint64 (E,)

    def dense(self, svids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) of supervoxel ids in ``sv_sorted``."""
        svids = np.asarray(svids, dtype=np.uint64)
        pos = np.searchsorted(self.sv_sorted, svids)
        pos = np.minimum(pos, max(len(self.sv_sorted) - 1, 0))
        found = (self.sv_sorted[pos] == svids) if len(self.sv_sorted) else np.zeros(svids.shape, bool)
        return pos, found & (svids != 0)

    def root_pos(self, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        roots = np.asarray(roots, dtype=np.uint64)
        pos = np.searchsorted(self.root_ids, roots)
        pos = np.minimum(pos, max(len(self.root_ids) - 1, 0))
        found = (self.root_ids[pos] == roots) if len(self.root_ids) else np.zeros(roots.shape, bool)
        return pos, found


def build_index(files: GraphFiles) -> GraphIndex:
    initial = files.initial
    order = np.argsort(initial[:, 0], kind="stable")
    sv_sorted = np.ascontiguousarray(initial[order, 0])
    root0 = np.ascontiguousarray(initial[order, 1])
    where = f"{files.directory}/initial.npy"
    if len(sv_sorted) and sv_sorted[0] == 0:
        raise GraphFormatError(f"{where}: supervoxel id 0 is reserved for 'no segment'")
    if np.any(root0 == 0):
        raise GraphFormatError(f"{where}: root id 0 is reserved")
    if np.any(sv_sorted[1:] == sv_sorted[:-1]):
        dup = sv_sorted[1:][sv_sorted[1:] == sv_sorted[:-1]][0]
        raise GraphFormatError(f"{where}: supervoxel {int(dup)} listed twice")

    n = len(sv_sorted)
    cur = root0.copy()
    ro = np.argsort(root0, kind="stable")
    rs = root0[ro]
    cuts = np.flatnonzero(rs[1:] != rs[:-1]) + 1
    init_roots = rs[np.concatenate([[0], cuts])] if n else np.zeros(0, np.uint64)
    members: dict[int, np.ndarray] = (
        dict(zip(init_roots.tolist(), np.split(ro, cuts), strict=True)) if n else {}
    )

    edits = files.edits
    e = len(edits)
    rec_idx: list[np.ndarray] = [np.arange(n, dtype=np.int64)]
    rec_root: list[np.ndarray] = [root0]
    rec_t: list[np.ndarray] = [np.full(n, files.created_us, np.int64)]
    new_roots: list[int] = []
    new_created: list[int] = []
    new_op: list[int] = []
    expired: dict[int, tuple[int, int]] = {}
    parents: list[int] = []
    children: list[int] = []

    def dense_or_fail(ids: np.ndarray, i: int) -> np.ndarray:
        pos = np.searchsorted(sv_sorted, ids)
        pos = np.minimum(pos, max(n - 1, 0))
        if n == 0 or np.any(sv_sorted[pos] != ids):
            bad = ids[sv_sorted[pos] != ids][0] if n else ids[0]
            raise GraphFormatError(
                f"{files.directory}/edits.npz: edit {i} uses unknown supervoxel {int(bad)}"
            )
        return pos

    sv_a = dense_or_fail(edits.sv_a, -1) if e else np.zeros(0, np.int64)
    split_dense = dense_or_fail(edits.split_svs, -1) if len(edits.split_svs) else np.zeros(0, np.int64)
    sv_b_known = edits.kind == MERGE
    sv_b = np.zeros(e, np.int64)
    if sv_b_known.any():
        sv_b[sv_b_known] = dense_or_fail(edits.sv_b[sv_b_known], -1)
    flag = np.zeros(n, bool)
    ts, kinds = edits.timestamp_us, edits.kind
    na, nb, offs = edits.new_root_a, edits.new_root_b, edits.split_offsets

    for i in range(e):
        t = int(ts[i])
        if t < files.created_us:
            raise GraphFormatError(f"edit {i}: timestamp before the graph's creation time")
        if kinds[i] == MERGE:
            ra, rb = int(cur[sv_a[i]]), int(cur[sv_b[i]])
            if ra == rb:
                raise GraphFormatError(f"edit {i}: merge of supervoxels already in the same root {ra}")
            m = np.concatenate([members.pop(ra), members.pop(rb)])
            new = int(na[i])
            cur[m] = new
            members[new] = m
            rec_idx.append(m)
            rec_root.append(np.full(len(m), new, np.uint64))
            rec_t.append(np.full(len(m), t, np.int64))
            for old in (ra, rb):
                expired[old] = (t, i)
                parents.append(old)
                children.append(new)
            new_roots.append(new)
            new_created.append(t)
            new_op.append(i)
        elif kinds[i] == SPLIT:
            moved = split_dense[offs[i] : offs[i + 1]]
            if len(moved) == 0:
                raise GraphFormatError(f"edit {i}: split with an empty moved set")
            r = int(cur[moved[0]])
            if np.any(cur[moved] != r):
                raise GraphFormatError(f"edit {i}: split set spans several roots")
            m = members.pop(r)
            flag[moved] = True
            keep = m[~flag[m]]
            moved_count = int(flag[m].sum())
            flag[moved] = False
            if moved_count != len(moved):
                raise GraphFormatError(f"edit {i}: split set lists a supervoxel twice")
            if len(keep) == 0:
                raise GraphFormatError(f"edit {i}: split moves every supervoxel of {r}")
            new_a, new_b = int(na[i]), int(nb[i])
            for new, part in ((new_a, moved), (new_b, keep)):
                cur[part] = new
                members[new] = part
                rec_idx.append(part)
                rec_root.append(np.full(len(part), new, np.uint64))
                rec_t.append(np.full(len(part), t, np.int64))
                parents.append(r)
                children.append(new)
                new_roots.append(new)
                new_created.append(t)
                new_op.append(i)
            expired[r] = (t, i)
        else:
            raise GraphFormatError(f"edit {i}: unknown kind {int(kinds[i])}")

    return _assemble(
        files,
        sv_sorted,
        init_roots,
        rec_idx,
        rec_root,
        rec_t,
        new_roots,
        new_created,
        new_op,
        expired,
        parents,
        children,
    )


def _assemble(
    files,
    sv_sorted,
    init_roots,
    rec_idx,
    rec_root,
    rec_t,
    new_roots,
    new_created,
    new_op,
    expired,
    parents,
    children,
) -> GraphIndex:
    ri = np.concatenate(rec_idx)
    order = np.argsort(ri, kind="stable")  # stable: keeps time order within a supervoxel
    ri = ri[order]
    rr = np.concatenate(rec_root)[order]
    rt = np.concatenate(rec_t)[order]
    tend = np.full(len(ri), NEVER, np.int64)
    same = ri[1:] == ri[:-1]
    tend[:-1][same] = rt[1:][same]

    all_roots = np.concatenate([init_roots, np.asarray(new_roots, np.uint64)])
    created = np.concatenate(
        [np.full(len(init_roots), files.created_us, np.int64), np.asarray(new_created, np.int64)]
    )
    created_op = np.concatenate([np.full(len(init_roots), -1, np.int64), np.asarray(new_op, np.int64)])
    ro = np.argsort(all_roots, kind="stable")
    all_roots, created, created_op = all_roots[ro], created[ro], created_op[ro]
    if np.any(all_roots[1:] == all_roots[:-1]) or (len(all_roots) and all_roots[0] == 0):
        dup = all_roots[1:][all_roots[1:] == all_roots[:-1]]
        raise GraphFormatError(f"{files.directory}: root id reused or 0 ({int(dup[0]) if len(dup) else 0})")
    expired_arr = np.full(len(all_roots), NEVER, np.int64)
    expired_op = np.full(len(all_roots), -1, np.int64)
    if expired:
        keys = np.fromiter(expired.keys(), np.uint64, len(expired))
        vals = np.array(list(expired.values()), np.int64)
        pos = np.searchsorted(all_roots, keys)
        expired_arr[pos], expired_op[pos] = vals[:, 0], vals[:, 1]

    parent = np.asarray(parents, np.uint64)
    child = np.asarray(children, np.uint64)
    po = np.argsort(parent, kind="stable")
    parent, child = parent[po], child[po]
    return GraphIndex(
        sv_sorted=sv_sorted,
        rec_idx=ri,
        rec_root=rr,
        rec_t=rt,
        rec_tend=tend,
        root_ids=all_roots,
        root_created=created,
        root_expired=expired_arr,
        root_created_op=created_op,
        root_expired_op=expired_op,
        edge_parent=parent,
        edge_child=child,
        edge_child_order=np.argsort(child, kind="stable"),
        edit_t=files.edits.timestamp_us,
        edit_op=files.edits.operation_id,
    )
