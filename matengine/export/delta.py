"""The Delta Lake log of an exported table, committed with delta-rs (``deltalake``).

The data files are the export's Parquet parts (written by :mod:`matengine.export.parquet_files`
through fsspec, to any store). delta-rs then writes the log: ``create_table_with_add_actions``
commits one ``add`` per part, with the part's size and min/max statistics, into a local staging
folder, and the log files are copied to the destination. So the same code path serves
file://, gs:// and s3://, with the store's credentials handled by fsspec alone.

A rerun replaces the whole log with a fresh version 0 listing the same parts. The commit's
``commitInfo`` carries delta-rs's wall-clock time; the parts and the manifest do not.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from matengine.export.destination import Destination

LOG = "_delta_log"


def _file_stats(meta: pq.FileMetaData, schema: pa.Schema) -> dict[str, Any]:
    """Delta's per-file statistics from the Parquet footer (numbers and times only: those
    are what a reader prunes on)."""
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for col_index, field in enumerate(schema):
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            continue
        lo = hi = None
        count = 0
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(col_index).statistics
            if st is None or not st.has_min_max:
                lo = hi = None
                break
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
            count += st.null_count or 0
        if lo is not None:
            lows[field.name], highs[field.name] = lo, hi
            nulls[field.name] = count
    return {"numRecords": meta.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls}


def commit_delta_log(dest: Destination, table: str, parts: list[str], schema: pa.Schema) -> None:
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    fs = dest.filesystem()
    actions = []
    for name in parts:
        path = dest.path(table, name)
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
        actions.append(
            AddAction(
                path=name,
                size=int(fs.size(path)),
                partition_values={},
                modification_time=0,  # not a clock: the same parts give the same add actions
                data_change=True,
                stats=json.dumps(_file_stats(meta, schema), sort_keys=True),
            )
        )
    with tempfile.TemporaryDirectory(prefix="matengine-delta-") as staging:
        create_table_with_add_actions(
            staging,
            DeltaSchema.from_arrow(schema),
            actions,
            mode="overwrite",
            name=table,
        )
        log = dest.path(table, LOG)
        if fs.exists(log):
            fs.rm(log, recursive=True)
        for local in sorted((Path(staging) / LOG).rglob("*")):
            if local.is_file():
                rel = local.relative_to(staging).as_posix()
                with fs.open(dest.path(table, rel), "wb") as out:
                    out.write(local.read_bytes())
