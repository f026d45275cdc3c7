"""Shared helpers: load a synthetic dataset into a datastack, read tables back as oracle-shaped
columns, compare row by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, text

from matengine import catalog
from matengine.db.identifiers import quote, version_schema
from matengine.schemas import get_schema
from matengine.workflows import runs
from matengine.workflows.engine import execute_inline
from matengine.workflows.submit import sync_parameters

TABLE_SCHEMAS = {"synapses": "synapse", "cells": "cell_type_local"}


def run_inline(engine: Engine, kind: str, params: dict, *, datastack: str,
               table: str | None = None) -> runs.Run:
    import matengine.workflows.registry  # noqa: F401

    run_id = runs.create_run(engine, kind, params, datastack=datastack, table_name=table)
    run = execute_inline(engine, run_id)
    assert run.state == "SUCCESS", run.errors
    return run


def upload_params(datastack: str, directory: Path, table: str, created: str,
                  roots_timestamp: str | None) -> dict:
    folder = directory / table
    mapping = json.loads((folder / "column_mapping.json").read_text())
    if roots_timestamp is None:
        mapping = {k: v for k, v in mapping.items() if "root" not in k}
    return {"datastack": datastack, "table": table, "schema": TABLE_SCHEMAS[table],
            "source": f"file://{folder}", "column_mapping": mapping,
            "roots_timestamp": roots_timestamp, "created": created, "chunk_rows": 700}


def load_dataset(engine: Engine, datastack: str, info) -> None:
    """Upload both tables (rows created at the dataset's start) and ingest at that time."""
    start = info.start.isoformat()
    for table in ("synapses", "cells"):
        roots_ts = info.initial_timestamp.isoformat() if table == "synapses" else None
        run_inline(engine, "bulk_upload",
                   upload_params(datastack, info.directory, table, start, roots_ts),
                   datastack=datastack, table=table)
    run_inline(engine, "ingest", sync_parameters(engine, "ingest", datastack, timestamp=start,
                                                 chunk_rows=500), datastack=datastack)


def read_table(engine: Engine, table_q: str, schema_name: str, seg_q: str | None = None,
               where: str = "true", params: dict | None = None) -> dict[str, np.ndarray]:
    """A table as oracle-shaped columns sorted by id: positions (n, 3), ids as uint64."""
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
        rows = conn.execute(text(f"SELECT {', '.join(sel)} FROM {table_q} a {join} "
                                 f"WHERE {where} ORDER BY a.id"), params or {}).all()
    out: dict[str, np.ndarray] = {"id": np.array([r[0] for r in rows], np.int64)}
    i = 1
    for f in schema.fields:
        if f.is_point:
            out[f"{f.name}_position"] = np.array([r[i:i + 3] for r in rows], np.float64)
            i += 3
        else:
            out[f.name] = np.array([r[i] for r in rows])
            i += 1
    for c in seg_cols:
        out[c] = np.array([r[i] for r in rows], np.int64).view(np.uint64)
        i += 1
    return out


def read_version(engine: Engine, datastack: str, version: int, table: str):
    return read_table(engine, quote(version_schema(datastack, version), table),
                      TABLE_SCHEMAS[table])


def assert_same_rows(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got["id"].tolist() == np.asarray(want["id"]).astype(np.int64).tolist()
    for col, expected in want.items():
        if col == "id":
            continue
        actual = got[col]
        if np.asarray(expected).dtype.kind == "f" or col.endswith("_position"):
            np.testing.assert_allclose(actual.astype(float), np.asarray(expected, float),
                                       err_msg=col)
        elif col.endswith(("_root_id", "_supervoxel_id")):
            bad = np.flatnonzero(actual != np.asarray(expected).astype(np.uint64))
            assert bad.size == 0, f"{col}: {bad.size} rows differ, first id {got['id'][bad[0]]}"
        else:
            assert actual.tolist() == np.asarray(expected).tolist(), col


def make_datastack(engine: Engine, name: str, info) -> None:
    catalog.add_datastack(engine, name, segmentation_source=info.graph_url,
                          voxel_resolution=info.annotation_resolution)
