"""Parquet files of an export, written with pyarrow through the destination's fsspec
filesystem: zstd, statistics on every column, one row group per read batch."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection

from matengine.export.destination import Destination
from matengine.export.source import ExportLayout, SpaceKey, chunk_batches

COMPRESSION = "zstd"


def part_name(index: int) -> str:
    return f"part-{int(index):05d}.parquet"


def write_part(
    dest: Destination,
    table: str,
    name: str,
    layout: ExportLayout,
    conn: Connection,
    relation: str,
    lo: int,
    hi: int,
    space: SpaceKey | None = None,
) -> int:
    """Write rows with sort key (the space key if ``space``, else the root id) in ``[lo, hi]``
    to ``<table>/<name>``; return the row count.

    Same rows, same bytes: pyarrow writes no clock or host into a file, so a rerun after a
    crash leaves exactly the file an uninterrupted run leaves."""
    return write_batches(
        dest, table, name, layout.schema, chunk_batches(conn, relation, layout, lo, hi, space)
    )


def write_batches(
    dest: Destination, folder: str, name: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> int:
    """Write ``batches`` (one row group each) to ``<folder>/<name>``; return the row count."""
    fs = dest.filesystem()
    rows = 0
    with fs.open(dest.path(folder, name), "wb") as f:
        with pq.ParquetWriter(f, schema, compression=COMPRESSION, write_statistics=True) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


def file_facts(fs: Any, path: str) -> dict[str, Any]:
    """Row count (from the footer) and sha256 of one file, read back from the store."""
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    with fs.open(path, "rb") as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    return {"rows": int(rows), "bytes": size, "sha256": digest.hexdigest()}
