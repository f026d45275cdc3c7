"""Root ids at any timestamp T for rows read from a live segmentation table.

The segmentation table's root ids are all valid at the table's ``roots_last_updated`` (L).
A stored root r is therefore still right at T unless r is valid at L and not at T: for
T >= L those are the ``expired`` roots of ``get_delta_roots(L, T)``, for T < L the ``new``
roots of ``get_delta_roots(T, L)``. Only rows holding such a root (or a supervoxel with no
root yet) have their supervoxels looked up again at T; every other row keeps its stored
root. Without an L (roots never updated) stored roots are checked one by one with
``is_latest_roots`` instead.

Root-id filters are given at T. Rows whose root at T is R hold, at L, either R or a root
sharing supervoxels with R: its past ids at L (T > L) or future ids at L (T < L). The SQL
prefilter keeps those candidates; the exact test runs after correction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from matengine.errors import InvalidInput
from matengine.query.reader import Batch
from matengine.segmentation.base import RootGraph


def _ids(values: Iterable[int] | np.ndarray) -> np.ndarray:
    return np.unique(
        np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.uint64)
    ).astype(np.int64)


@dataclass
class RootCorrector:
    graph: RootGraph
    timestamp: datetime
    last_updated: datetime | None
    stale: np.ndarray | None  # sorted int64 stored roots not valid at T; None: unknown L

    @classmethod
    def create(cls, graph: RootGraph, timestamp: datetime, last_updated: datetime | None) -> RootCorrector:
        if last_updated is None:
            stale = None
        elif timestamp == last_updated:
            stale = np.zeros(0, np.int64)
        elif timestamp > last_updated:
            stale = _ids(graph.get_delta_roots(last_updated, timestamp)[0])
        else:
            stale = _ids(graph.get_delta_roots(timestamp, last_updated)[1])
        return cls(graph, timestamp, last_updated, stale)

    def _needs_lookup(self, roots: np.ndarray, svids: np.ndarray) -> np.ndarray:
        missing_root = (roots == 0) & (svids != 0)
        if self.stale is not None:
            return missing_root | ((svids != 0) & np.isin(roots, self.stale))
        unique = np.unique(roots[roots != 0])
        latest = np.asarray(self.graph.is_latest_roots(unique.astype(np.uint64), self.timestamp), bool)
        return missing_root | ((svids != 0) & np.isin(roots, unique[~latest]))

    def correct(self, batch: Batch, points: Iterable[str]) -> int:
        """Rewrite ``<pt>_root_id`` of ``batch`` in place to roots at T; returns rows looked up."""
        masks, svid_parts = [], []
        points = list(points)
        for pt in points:
            roots, svids = batch.values[f"{pt}_root_id"], batch.values[f"{pt}_supervoxel_id"]
            need = self._needs_lookup(roots, svids)
            roots[svids == 0] = 0
            masks.append(need)
            svid_parts.append(svids[need])
        total = sum(len(p) for p in svid_parts)
        if not total:
            return 0
        found = np.asarray(
            self.graph.get_roots(np.concatenate(svid_parts).astype(np.uint64), self.timestamp), np.uint64
        ).astype(np.int64)
        start = 0
        for pt, need, part in zip(points, masks, svid_parts, strict=True):
            batch.values[f"{pt}_root_id"][need] = found[start : start + len(part)]
            start += len(part)
        return total

    def candidates(self, roots: list[int], *, allow_invalid: bool) -> list[int]:
        """Stored roots (at L) that may be ``roots`` at T; checks ``roots`` are valid at T."""
        wanted = _ids(roots)
        if not len(wanted):
            return []
        # 0 is "no segmentation", not a root: always a valid filter value, matched as stored
        valid = wanted == 0
        if (~valid).any():
            valid[~valid] = np.asarray(
                self.graph.is_latest_roots(wanted[~valid].astype(np.uint64), self.timestamp), bool
            )
        if not valid.all():
            if not allow_invalid:
                bad = wanted[~valid][:10].tolist()
                raise InvalidInput(
                    f"root id(s) {bad} are not valid at {self.timestamp.isoformat()}; map them "
                    "with the chunkedgraph (get_latest_roots / get_past_ids) or pass "
                    "allow_invalid_root_ids=True",
                    field="root_id filter",
                )
            wanted = wanted[valid]
        if self.last_updated is None or self.timestamp == self.last_updated or not len(wanted):
            return wanted.tolist()
        u = wanted[wanted != 0].astype(np.uint64)
        if self.timestamp > self.last_updated:
            related = self.graph.get_past_ids(u, self.last_updated)
        else:
            related = self.graph.get_future_ids(u, self.last_updated)
        out = set(wanted.tolist())
        for ids in related.values():
            out.update(int(v) for v in np.asarray(ids, np.uint64).astype(np.int64))
        return sorted(out)


def post_filter_mask(batch: Batch, op: str, key: str, value: object) -> np.ndarray:
    """The rows of ``batch`` passing one filter on an (integer) root column, after correction."""
    col = batch.values[key]
    if op == "in":
        return np.isin(col, np.asarray(value, np.int64))
    if op == "notin":
        return ~np.isin(col, np.asarray(value, np.int64))
    v = np.int64(value)  # type: ignore[arg-type]
    return {"equal": col == v, "gt": col > v, "lt": col < v, "ge": col >= v, "le": col <= v}[op]
