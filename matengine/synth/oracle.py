"""Ground truth for a synthetic dataset, computed from its files alone.

Deliberately independent of the engine: plain numpy over ``dataset.json``, the graph's
``graph.json``/``initial.npy``/``edits.npz`` and the annotation ``.npy`` files, plus the
supervoxel volume read whole with CloudVolume. No ``matengine`` import. Algorithms are the
obvious slow ones: the root of a supervoxel at T is found by replaying every edit with
``t <= T`` over a dense supervoxel->root array; a point's supervoxel by indexing the
whole volume.

The rule (docs/design.md §3): a row is in the state at T iff ``created <= T`` and (``deleted`` is
None or ``deleted > T``); its root ids are the roots of its supervoxels at T.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime | str) -> int:
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(microseconds=1)


class Oracle:
    """Expected answers for the dataset in ``directory`` (made by ``synth.generate``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "dataset.json").read_text())
        gdir = self.directory / self.meta["graph"]["path"]
        self.graph_meta = json.loads((gdir / "graph.json").read_text())
        self.created_us = _us(self.graph_meta["created"])
        initial = np.load(gdir / "initial.npy")
        self.svids = initial[:, 0].copy()
        self.initial_roots = initial[:, 1].copy()
        self._pos = {int(s): i for i, s in enumerate(self.svids.tolist())}
        with np.load(gdir / "edits.npz") as z:
            self.edits = {k: z[k] for k in z.files}
        self.seg_res = np.asarray(self.meta["volume"]["resolution"], np.float64)
        self.ann_res = np.asarray(self.meta["annotation_resolution"], np.float64)
        self._states: dict[int, np.ndarray] = {0: self.initial_roots.copy()}
        self._volume: np.ndarray | None = None
        self._lineage: tuple[dict, dict, dict] | None = None

    # ------------------------------------------------------------------ roots
    def _edits_upto(self, t_us: int) -> int:
        return int(np.count_nonzero(self.edits["timestamp_us"] <= t_us))

    def _state_after(self, k: int) -> np.ndarray:
        """Root of every supervoxel after the first ``k`` edits, by plain replay."""
        if k in self._states:
            return self._states[k]
        base = max(j for j in self._states if j <= k)
        cur = self._states[base].copy()
        e = self.edits
        for i in range(base, k):
            if e["kind"][i] == 0:  # merge: both roots' supervoxels go to the new root
                ra = cur[self._pos[int(e["sv_a"][i])]]
                rb = cur[self._pos[int(e["sv_b"][i])]]
                cur[(cur == ra) | (cur == rb)] = e["new_root_a"][i]
            else:  # split: the listed supervoxels leave, the rest of the root stays
                moved = e["split_svs"][e["split_offsets"][i] : e["split_offsets"][i + 1]]
                idx = np.array([self._pos[int(s)] for s in moved])
                old = cur[idx[0]]
                rest = cur == old
                rest[idx] = False
                cur[idx] = e["new_root_a"][i]
                cur[rest] = e["new_root_b"][i]
        self._states[k] = cur
        return cur

    def roots_at(self, svids, t: datetime) -> np.ndarray:
        t_us = _us(t)
        svids = np.asarray(svids, np.uint64).ravel()
        if t_us < self.created_us:
            return np.zeros(len(svids), np.uint64)
        state = self._state_after(self._edits_upto(t_us))
        out = np.zeros(len(svids), np.uint64)
        for i, s in enumerate(svids.tolist()):
            j = self._pos.get(s)
            if j is not None:
                out[i] = state[j]
        return out

    def valid_roots_at(self, t: datetime) -> np.ndarray:
        if _us(t) < self.created_us:
            return np.zeros(0, np.uint64)
        return np.unique(self._state_after(self._edits_upto(_us(t))))

    def delta_roots(self, t0: datetime, t1: datetime) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.valid_roots_at(t0), self.valid_roots_at(t1)
        return np.setdiff1d(a, b), np.setdiff1d(b, a)

    def leaves(self, root: int) -> np.ndarray:
        created = self.root_created_us(root)
        state = self.roots_at(self.svids, datetime.fromtimestamp(0, UTC) + timedelta(microseconds=created))
        return np.sort(self.svids[state == np.uint64(root)])

    def _lineage_tables(self) -> tuple[dict, dict, dict]:
        """(parents, children, created_us) of every root, by replaying all edits."""
        if self._lineage is None:
            parents: dict[int, list[int]] = {}
            children: dict[int, list[int]] = {}
            created = {int(r): self.created_us for r in np.unique(self.initial_roots)}
            e = self.edits
            for i in range(len(e["timestamp_us"])):
                before = self._state_after(i)
                if e["kind"][i] == 0:
                    olds = {
                        int(before[self._pos[int(e["sv_a"][i])]]),
                        int(before[self._pos[int(e["sv_b"][i])]]),
                    }
                    news = [int(e["new_root_a"][i])]
                else:
                    first = e["split_svs"][e["split_offsets"][i]]
                    olds = {int(before[self._pos[int(first)]])}
                    news = [int(e["new_root_a"][i]), int(e["new_root_b"][i])]
                for n in news:
                    created[n] = int(e["timestamp_us"][i])
                    parents[n] = sorted(olds)
                    for o in olds:
                        children.setdefault(o, []).append(n)
            self._lineage = (parents, children, created)
        return self._lineage

    def past_operations(self, root: int) -> dict[int, list[int]]:
        """Operation id -> sorted roots it retired, for every edit that retired an ancestor
        of ``root`` (its change log, as PyChunkedGraph defines it)."""
        ancestors = self.ancestors(root)
        parents = self._lineage_tables()[0]
        e = self.edits
        out = {}
        for i in range(len(e["timestamp_us"])):
            olds = parents[int(e["new_root_a"][i])]
            if ancestors & set(olds):
                out[int(e["operation_id"][i])] = olds
        return out

    def root_created_us(self, root: int) -> int:
        return self._lineage_tables()[2][int(root)]

    def ancestors(self, root: int) -> set[int]:
        parents = self._lineage_tables()[0]
        out, todo = set(), list(parents.get(int(root), []))
        while todo:
            r = todo.pop()
            if r not in out:
                out.add(r)
                todo.extend(parents.get(r, []))
        return out

    def descendants(self, root: int) -> set[int]:
        children = self._lineage_tables()[1]
        out, todo = set(), list(children.get(int(root), []))
        while todo:
            r = todo.pop()
            if r not in out:
                out.add(r)
                todo.extend(children.get(r, []))
        return out

    def past_ids(self, root: int, t_past: datetime) -> np.ndarray:
        valid = set(self.valid_roots_at(t_past).tolist())
        return np.array(sorted((self.ancestors(root) | {int(root)}) & valid), np.uint64)

    def future_ids(self, root: int, t_future: datetime) -> np.ndarray:
        valid = set(self.valid_roots_at(t_future).tolist())
        return np.array(sorted((self.descendants(root) | {int(root)}) & valid), np.uint64)

    # ------------------------------------------------------------------ supervoxels
    def _whole_volume(self) -> np.ndarray:
        if self._volume is None:
            from cloudvolume import CloudVolume

            path = "file://" + str((self.directory / self.meta["volume"]["path"]).resolve())
            cv = CloudVolume(path, progress=False, fill_missing=True)
            self._volume = np.asarray(cv[:, :, :])[..., 0]
        return self._volume

    def supervoxels_at(self, points, points_resolution=None) -> np.ndarray:
        """Supervoxel under each point (0 if NaN, outside or on label 0)."""
        res = self.ann_res if points_resolution is None else np.asarray(points_resolution, float)
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        vol = self._whole_volume()
        offset = np.asarray(self.meta["volume"]["voxel_offset"], np.int64)
        out = np.zeros(len(pts), np.uint64)
        for i, p in enumerate(pts):
            if not np.all(np.isfinite(p)):
                continue
            v = np.floor(p * res / self.seg_res).astype(np.int64) - offset
            if np.all(v >= 0) and np.all(v < vol.shape):
                out[i] = vol[v[0], v[1], v[2]]
        return out

    # ------------------------------------------------------------------ tables
    def base_rows(self, name: str) -> dict[str, np.ndarray]:
        """The table's file columns under their schema names (positions (n, 3))."""
        folder = self.directory / self.meta["tables"][name]["folder"]
        mapping = json.loads((folder / "column_mapping.json").read_text())
        cols: dict[str, np.ndarray] = {}
        for fname, target in mapping.items():
            arr = np.load(folder / f"{fname}.npy")
            if isinstance(target, list):
                for j, col in enumerate(target):
                    cols[col] = arr[:, j]
            else:
                cols[target] = arr
        return cols

    def table_at(
        self,
        name: str,
        t: datetime,
        extra_rows: list[dict] | None = None,
        deleted: dict[int, datetime] | None = None,
        created: datetime | None = None,
    ) -> dict[str, np.ndarray]:
        """Expected rows of table ``name`` in the state at ``t``, sorted by id.

        Returns columns: ``id``, every ``<pt>_position`` (n, 3), the other annotation
        columns, and ``<pt>_supervoxel_id`` / ``<pt>_root_id`` for every bound point.
        ``extra_rows`` are rows added later (dicts with ``id``, ``created``, optional
        ``deleted``, positions and other columns); ``deleted`` marks file rows deleted at
        a time; ``created`` overrides when file rows were created (default: the
        dataset's ``annotations_created``).
        """
        info = self.meta["tables"][name]
        base = self.base_rows(name)
        n = len(base["id"])
        base_created = _us(created) if created is not None else _us(self.meta["annotations_created"])
        created_us = np.full(n, base_created, np.int64)
        deleted_us = np.full(n, np.iinfo(np.int64).max, np.int64)
        if deleted:
            pos = {int(v): i for i, v in enumerate(base["id"].tolist())}
            for rid, when in deleted.items():
                deleted_us[pos[int(rid)]] = _us(when)
        keep_cols = [c for c in base if not c.endswith(("_supervoxel_id", "_root_id"))]
        cols = {c: list(base[c]) for c in keep_cols}
        created_l: list[int] = created_us.tolist()
        deleted_l: list[int] = deleted_us.tolist()
        for row in extra_rows or []:
            for c in keep_cols:
                cols[c].append(np.asarray(row[c]))
            created_l.append(_us(row["created"]))
            deleted_l.append(_us(row["deleted"]) if row.get("deleted") else np.iinfo(np.int64).max)
        t_us = _us(t)
        alive = (np.asarray(created_l) <= t_us) & (np.asarray(deleted_l) > t_us)
        out = {c: np.asarray(v)[alive] for c, v in cols.items()}
        order = np.argsort(out["id"], kind="stable")
        out = {c: v[order] for c, v in out.items()}
        for pt in info["bound_points"]:
            sv = self.supervoxels_at(out[f"{pt}_position"])
            out[f"{pt}_supervoxel_id"] = sv
            out[f"{pt}_root_id"] = self.roots_at(sv, t)
        return out
