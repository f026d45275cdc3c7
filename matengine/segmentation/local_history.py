"""Change logs of the built-in graph, in PyChunkedGraph's shapes (its ``SegmentHistory``).

A root's *past operations* are the edits that retired one of its ancestors in the lineage
DAG (the root itself excluded). Per operation, as PyChunkedGraph reports them:

* ``before_root_ids`` -- the roots the edit retired; ``after_root_ids`` -- their children
  in the root's lineage (for a split, only the side that leads to the root);
* ``in_neuron`` -- merge: every edited supervoxel is in the root at its creation; split:
  any is; ``is_relevant`` -- merge: the edited supervoxels started in different roots;
  split: they are in different roots when the root was created;
* ``filtered=True`` keeps the operations that are both.

The edited supervoxels of an edit are its sink then its sources (merge: ``sv_b``,
``sv_a``; split: ``sv_b`` then the moved set). Users are the ids stored with each edit
(the API token id; 0 for edits written without one, e.g. synthetic histories).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from matengine.segmentation.errors import SegmentationError
from matengine.segmentation.local_format import MERGE
from matengine.segmentation.local_graph import LocalGraph
from matengine.segmentation.timecodes import from_us

MAX_ROOTS = 10_000
MAX_OPERATIONS = 10_000


class BadHistoryRequest(SegmentationError):
    """A change-log request this graph cannot answer (the API answers 400)."""


class UnknownRoot(BadHistoryRequest):
    """A root id this graph never created."""


def _ancestors(graph: LocalGraph, root: int) -> set[int]:
    _, _, known = graph.root_intervals(np.array([root], np.uint64))
    if not known[0]:
        raise UnknownRoot("the root id is not a root of this graph")
    seen: set[int] = set()
    frontier = [root]
    while frontier:
        nxt = []
        for node in frontier:
            for p in map(int, graph._parents(node)):
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        frontier = nxt
    return seen


def _retired_by(graph: LocalGraph, roots: set[int]) -> dict[int, list[int]]:
    """Edit index -> the roots among ``roots`` that it retired (sorted)."""
    ix = graph.index
    out: dict[int, list[int]] = {}
    if not roots:
        return out
    arr = np.array(sorted(roots), np.uint64)
    pos, _ = ix.root_pos(arr)
    for r, op in zip(arr.tolist(), ix.root_expired_op[pos].tolist(), strict=True):
        if op >= 0:
            out.setdefault(int(op), []).append(int(r))
    return out


def _edited_supervoxels(graph: LocalGraph, i: int) -> np.ndarray:
    e = graph.files.edits
    if e.kind[i] == MERGE:
        return np.array([e.sv_b[i], e.sv_a[i]], np.uint64)
    return np.concatenate([e.sv_b[i : i + 1], e.split_set(i)]).astype(np.uint64)


def tabular_change_log(graph: LocalGraph, root: int, filtered: bool) -> pd.DataFrame:
    """One row per past operation of ``root``, ordered by operation id."""
    ancestors = _ancestors(graph, root)
    lineage = ancestors | {root}
    by_edit = _retired_by(graph, ancestors)
    e = graph.files.edits
    assert e.user_id is not None
    created = graph.files.created
    root_created = from_us(graph.root_intervals(np.array([root], np.uint64))[0][0])
    rows: list[dict[str, Any]] = []
    for i in sorted(by_edit, key=lambda k: int(e.operation_id[k])):
        before = by_edit[i]
        after = sorted(int(c) for c in graph._children(before[0]) if int(c) in lineage)
        svs = _edited_supervoxels(graph, i)
        now_roots = graph.get_roots(svs, root_created)
        is_merge = bool(e.kind[i] == MERGE)
        if is_merge:
            relevant = len(np.unique(graph.get_roots(svs, created))) != 1
            in_neuron = bool(np.all(now_roots == root))
        else:
            relevant = len(np.unique(now_roots)) != 1
            in_neuron = bool(np.any(now_roots == root))
        rows.append(
            {
                "operation_id": int(e.operation_id[i]),
                "timestamp": from_us(int(e.timestamp_us[i])),
                "user_id": str(int(e.user_id[i])),
                "before_root_ids": before,
                "after_root_ids": after,
                "is_merge": is_merge,
                "in_neuron": in_neuron,
                "is_relevant": relevant,
            }
        )
    columns = [
        "operation_id",
        "timestamp",
        "user_id",
        "before_root_ids",
        "after_root_ids",
        "is_merge",
        "in_neuron",
        "is_relevant",
    ]
    df = pd.DataFrame(rows, columns=columns)
    if filtered:
        df = df[df["in_neuron"] & df["is_relevant"]].drop(columns=["in_neuron", "is_relevant"])
    return df


def tabular_change_log_json(graph: LocalGraph, roots: list[int], filtered: bool) -> dict[str, str]:
    """``tabular_change_log_many``: per root (as a string) the frame's ``to_json()``
    (timestamps in epoch milliseconds), with PyChunkedGraph's user name columns."""
    if len(roots) > MAX_ROOTS:
        raise BadHistoryRequest(f"at most {MAX_ROOTS} root ids per request")
    out = {}
    for r in roots:
        df = tabular_change_log(graph, int(r), filtered)
        if len(df):
            # no user directory here: PyChunkedGraph's answer for users it cannot name
            df["user_name"] = "unknown"
            df["user_affiliation"] = "unknown"
        out[str(int(r))] = df.to_json()
    return out


def change_log_summary(graph: LocalGraph, root: int, filtered: bool) -> dict[str, Any]:
    df = tabular_change_log(graph, root, filtered)
    users: dict[str, Counter] = {}
    for user, group in df.groupby("user_id", sort=True):
        merges = int(group["is_merge"].sum())
        users[str(user)] = Counter(n_splits=len(group) - merges, n_mergers=merges)
    past = [int(r) for ids in df["before_root_ids"] for r in ids]
    merges = int(df["is_merge"].sum()) if len(df) else 0
    return {
        "n_splits": int(len(df) - merges),
        "n_mergers": merges,
        "user_info": {u: dict(c) for u, c in users.items()},
        "operations_ids": [int(o) for o in df["operation_id"]],
        "past_ids": past,
    }


def _coords(row: np.ndarray) -> list[list[float]]:
    return [] if np.isnan(row).any() else [[float(v) for v in row]]


def merge_log(graph: LocalGraph, root: int) -> dict[str, list]:
    e = graph.files.edits
    assert e.coord_a is not None and e.coord_b is not None
    by_edit = _retired_by(graph, _ancestors(graph, root))
    edges, coords = [], []
    for i in sorted(by_edit, key=lambda k: int(e.operation_id[k])):
        if e.kind[i] != MERGE:
            continue
        edges.append([[int(e.sv_a[i]), int(e.sv_b[i])]])
        coords.append([_coords(e.coord_a[i]), _coords(e.coord_b[i])])
    return {"merge_edges": edges, "merge_edge_coords": coords}


def operation_details(graph: LocalGraph, operation_ids: list[int]) -> dict[str, dict[str, Any]]:
    """Log entry of each known operation id (unknown ids are left out, as PCG does)."""
    if len(operation_ids) > MAX_OPERATIONS:
        raise BadHistoryRequest(f"at most {MAX_OPERATIONS} operation ids per request")
    e = graph.files.edits
    assert e.user_id is not None and e.coord_a is not None and e.coord_b is not None
    order = np.argsort(e.operation_id, kind="stable")
    sorted_ops = e.operation_id[order]
    out: dict[str, dict[str, Any]] = {}
    for op in operation_ids:
        k = int(np.searchsorted(sorted_ops, np.uint64(op)))
        if k >= len(sorted_ops) or int(sorted_ops[k]) != int(op):
            continue
        i = int(order[k])
        merge = bool(e.kind[i] == MERGE)
        new = [int(e.new_root_a[i])] if merge else [int(e.new_root_a[i]), int(e.new_root_b[i])]
        entry: dict[str, Any] = {
            "operation_id": int(op),
            "timestamp": str(from_us(int(e.timestamp_us[i]))),
            "user": str(int(e.user_id[i])),
            "roots": new,
            "source_ids": [int(e.sv_a[i])] if merge else [int(s) for s in e.split_set(i)],
            "sink_ids": [int(e.sv_b[i])],
            "source_coords": _coords(e.coord_a[i]),
            "sink_coords": _coords(e.coord_b[i]),
            "operation_status": 0,
        }
        if merge:
            entry["added_edges"] = [[int(e.sv_a[i]), int(e.sv_b[i])]]
        else:
            entry["removed_edges"] = []  # no supervoxel adjacency here: nothing was cut
        out[str(int(op))] = entry
    return out
