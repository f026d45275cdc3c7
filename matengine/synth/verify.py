"""Comparing what the engine holds with what the oracle expects, row by row.

Used by ``matengine demo`` and the end-to-end tests. Tables are brought to the oracle's shape:
columns sorted by id, positions as (n, 3) arrays, supervoxel and root ids as uint64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from matengine.db.identifiers import quote
from matengine.schemas import get_schema


def read_columns(
    engine: Engine,
    table_q: str,
    schema_name: str,
    seg_q: str | None = None,
    where: str = "true",
    params: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """A table (live ⋈ segmentation, or a version table) as oracle-shaped columns."""
    schema = get_schema(schema_name)
    sel = ["a.id"]
    for f in schema.fields:
        if f.is_point:
            sel += [f"a.{quote(f'{f.name}_position_{a}')}" for a in "xyz"]
        else:
            sel.append(f"a.{quote(f.name)}")
    seg_cols = [c.name for c in schema.segmentation_columns()]
    src = "a" if seg_q is None else "s"
    sel += [f"{src}.{quote(c)}" for c in seg_cols]
    join = f"JOIN {seg_q} s ON s.id = a.id" if seg_q else ""
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT {', '.join(sel)} FROM {table_q} a {join} WHERE {where} ORDER BY a.id"), params or {}
        ).all()
    return _shape([list(r) for r in rows], schema_name)


def _shape(rows: list[list[Any]], schema_name: str) -> dict[str, np.ndarray]:
    schema = get_schema(schema_name)
    out: dict[str, np.ndarray] = {"id": np.array([r[0] for r in rows], np.int64)}
    i = 1
    for f in schema.fields:
        if f.is_point:
            out[f"{f.name}_position"] = np.array([r[i : i + 3] for r in rows], np.float64)
            i += 3
        else:
            out[f.name] = np.array([r[i] for r in rows])
            i += 1
    for c in schema.segmentation_columns():
        out[c.name] = np.array([0 if r[i] is None else r[i] for r in rows], np.int64).view(np.uint64)
        i += 1
    return out


def columns_from_arrow(table: Any, schema_name: str) -> dict[str, np.ndarray]:
    """A query result (pyarrow Table, positions split into _x/_y/_z) in the oracle's shape."""
    schema = get_schema(schema_name)
    data = table.to_pydict()
    order = np.argsort(np.asarray(data["id"], np.int64), kind="stable")
    names = ["id"]
    for f in schema.fields:
        names += [f"{f.name}_position_{a}" for a in "xyz"] if f.is_point else [f.name]
    names += [c.name for c in schema.segmentation_columns()]
    rows = [[data[n][k] for n in names] for k in order]
    return _shape(rows, schema_name)


def differences(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> list[str]:
    """Human-readable differences (empty when the tables are equal)."""
    g_ids = got["id"].astype(np.int64)
    w_ids = np.asarray(want["id"]).astype(np.int64)
    if g_ids.tolist() != w_ids.tolist():
        extra = np.setdiff1d(g_ids, w_ids)[:5].tolist()
        missing = np.setdiff1d(w_ids, g_ids)[:5].tolist()
        return [
            f"ids differ: {len(g_ids)} rows vs {len(w_ids)} expected; unexpected {extra}, missing {missing}"
        ]
    out = []
    for col, expected in want.items():
        if col == "id" or col not in got:
            if col not in got:
                out.append(f"column {col} missing")
            continue
        actual, expected = got[col], np.asarray(expected)
        if col.endswith(("_root_id", "_supervoxel_id")):
            bad = np.flatnonzero(actual.astype(np.uint64) != expected.astype(np.uint64))
        elif expected.dtype.kind in "fiu" or col.endswith("_position"):
            close = np.isclose(actual.astype(float), expected.astype(float), equal_nan=True)
            bad = np.flatnonzero(~close.reshape(len(actual), -1).all(axis=1))
        else:
            bad = np.flatnonzero(
                np.asarray(actual.tolist(), dtype=object) != np.asarray(expected.tolist(), dtype=object)
            )
        if bad.size:
            out.append(f"{col}: {bad.size} rows differ (first id {int(g_ids[bad[0]])})")
    return out
