"""Serialize a :class:`QueryResult` batch by batch: Arrow IPC stream, JSON records, CSV.

Each writer yields bytes as soon as a batch is encoded, so an HTTP response or a file grows
while the query is read and memory holds one batch at a time.
"""

from __future__ import annotations

import io
import json
from collections.abc import Generator, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from matengine.query.engine import QueryResult


class _Chunks(io.RawIOBase):
    """A write-only file that hands over what was written since the last :meth:`take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def ipc_compression(accept_encoding: str | None) -> str | None:
    """Compression inside the IPC buffers, as the field's server chooses it from the client's
    ``Accept-Encoding`` (never HTTP content-encoding: caveclient reads raw bytes)."""
    value = (accept_encoding or "").lower()
    if "zstd" in value:
        return "zstd"
    if "lz4" in value:
        return "lz4"
    return None


def arrow_stream(result: QueryResult, compression: str | None = None) -> Generator[bytes, None, None]:
    sink = _Chunks()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, result.schema, options=options) as writer:
        yield sink.take()  # the schema message: headers are out before the first row is read
        for batch in result.record_batches():
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def json_records(result: QueryResult) -> Generator[bytes, None, None]:
    """``[{"col": value, …}, …]`` like ``DataFrame.to_json(orient="records")``."""
    first = True
    yield b"["
    for batch in result.record_batches():
        rows = batch.to_pylist()
        if not rows:
            continue
        body = ",".join(json.dumps(r, default=_json_default) for r in rows)
        yield (body if first else "," + body).encode()
        first = False
    yield b"]"


def csv_stream(result: QueryResult) -> Iterator[bytes]:
    sink = _Chunks()
    with pa_csv.CSVWriter(sink, result.schema) as writer:
        for batch in result.record_batches():
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()
