"""HTTP responses for query results, streamed batch by batch.

caveclient accepts exactly ``Content-Type: data.arrow`` with an Arrow IPC *stream* body; the
resolution of the positions goes in ``dataframe_resolution`` and server warnings (row cap,
table notices) in ``Warning``, which caveclient logs.

The result's batches are produced by a blocking generator (database reads); it runs in the
thread pool, and is closed there too when the client goes away, so its connection is given
back (or dropped) without blocking the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from matengine.query.engine import QueryResult
from matengine.query.output import arrow_stream, ipc_compression, json_records

ARROW_MEDIA_TYPE = "data.arrow"
_DONE = object()


async def _in_threads(gen: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = await run_in_threadpool(next, gen, _DONE)
            if chunk is _DONE:
                break
            if isinstance(chunk, bytes) and chunk:
                yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(gen.close)


def _header_text(value: str) -> str:
    # header values must be latin-1; notices are free text
    return value.encode("ascii", "replace").decode("ascii").replace("\n", " ")


def result_headers(result: QueryResult) -> dict[str, str]:
    headers = {
        "dataframe_resolution": ", ".join(str(float(r)) for r in result.resolution),
        "column_names": _header_text(str(result.column_names)),
    }
    if result.warnings:
        headers["Warning"] = _header_text(", ".join(result.warnings))
    return headers


def query_response(
    result: QueryResult, request: Request, *, arrow: bool = True, ipc_compress: bool = True
) -> StreamingResponse:
    headers = result_headers(result)
    if not arrow:
        return StreamingResponse(
            _in_threads(json_records(result)), media_type="application/json", headers=headers
        )
    compression = ipc_compression(request.headers.get("accept-encoding")) if ipc_compress else None
    return StreamingResponse(
        _in_threads(arrow_stream(result, compression)), media_type=ARROW_MEDIA_TYPE, headers=headers
    )
