"""Shared helpers: load a synthetic dataset into a datastack, read tables back as oracle-shaped
columns, compare row by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from matengine import catalog
from matengine.db.identifiers import quote, version_schema
from matengine.synth.verify import differences, read_columns
from matengine.workflows import runs
from matengine.workflows.engine import execute_inline
from matengine.workflows.submit import sync_parameters

TABLE_SCHEMAS = {"synapses": "synapse", "cells": "cell_type_local"}


def run_inline(
    engine: Engine, kind: str, params: dict, *, datastack: str, table: str | None = None
) -> runs.Run:
    import matengine.workflows.registry  # noqa: F401

    run_id = runs.create_run(engine, kind, params, datastack=datastack, table_name=table)
    run = execute_inline(engine, run_id)
    assert run.state == "SUCCESS", run.errors
    return run


def upload_params(
    datastack: str, directory: Path, table: str, created: str, roots_timestamp: str | None
) -> dict:
    folder = directory / table
    mapping = json.loads((folder / "column_mapping.json").read_text())
    if roots_timestamp is None:
        mapping = {k: v for k, v in mapping.items() if "root" not in k}
    return {
        "datastack": datastack,
        "table": table,
        "schema": TABLE_SCHEMAS[table],
        "source": f"file://{folder}",
        "column_mapping": mapping,
        "roots_timestamp": roots_timestamp,
        "created": created,
        "chunk_rows": 700,
    }


def load_dataset(engine: Engine, datastack: str, info) -> None:
    """Upload both tables (rows created at the dataset's start) and ingest at that time."""
    start = info.start.isoformat()
    for table in ("synapses", "cells"):
        roots_ts = info.initial_timestamp.isoformat() if table == "synapses" else None
        run_inline(
            engine,
            "bulk_upload",
            upload_params(datastack, info.directory, table, start, roots_ts),
            datastack=datastack,
            table=table,
        )
    run_inline(
        engine,
        "ingest",
        sync_parameters(engine, "ingest", datastack, timestamp=start, chunk_rows=500),
        datastack=datastack,
    )


def read_table(
    engine: Engine,
    table_q: str,
    schema_name: str,
    seg_q: str | None = None,
    where: str = "true",
    params: dict | None = None,
) -> dict[str, np.ndarray]:
    return read_columns(engine, table_q, schema_name, seg_q, where, params)


def read_version(engine: Engine, datastack: str, version: int, table: str):
    return read_table(engine, quote(version_schema(datastack, version), table), TABLE_SCHEMAS[table])


def assert_same_rows(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    problems = differences(got, want)
    assert not problems, "; ".join(problems)


def make_datastack(engine: Engine, name: str, info) -> None:
    catalog.add_datastack(
        engine, name, segmentation_source=info.graph_url, voxel_resolution=info.annotation_resolution
    )
