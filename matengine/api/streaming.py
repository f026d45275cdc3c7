"""HTTP responses for query results, streamed batch by batch.

caveclient accepts exactly ``Content-Type: data.arrow`` with an Arrow IPC *stream* body; the
resolution of the positions goes in ``dataframe_resolution`` and server warnings (row cap,
table notices) in ``Warning``, which caveclient logs.

The result's batches are produced by a blocking generator (database reads); it runs in the
thread pool. The query is run up to its first batch before the response starts
(:meth:`QueryResult.prime`), so an error there is a JSON error answer, never a broken stream.
When the client goes away, before the first batch or mid-stream, the PostgreSQL query is
cancelled at once (even while a thread waits on it) and the generator is closed in the
thread pool, so its connection is given back (or dropped) without blocking the event loop.

Trips between the event loop and the thread pool cost a small query more than its rows: the
query is planned, primed and — when that read all of it — encoded on one trip, and answered
in one body; a streamed result travels about a MiB per trip. Arrow buffers are compressed as
the client asks unless the caller is on this machine (docs/operations.md, "Query serving").
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Generator

import anyio
import anyio.to_thread
import pyarrow as pa
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from matengine.api.deps import error_response, settings_of
from matengine.auth import is_loopback
from matengine.query.counts import count_result
from matengine.query.engine import QueryResult
from matengine.query.output import arrow_stream, ipc_compression, json_records

ARROW_MEDIA_TYPE = "data.arrow"
_DONE = object()


# bytes gathered per trip to a worker thread: a trip costs a context switch or two, a batch of
# rows is a few MB, so small pieces (the schema message) travel with the next one
STEP_BYTES = 1 << 20


class _Pump:
    """Steps a blocking generator from worker threads, about :data:`STEP_BYTES` at a time."""

    def __init__(self, gen: Generator[bytes, None, None]) -> None:
        self.gen = gen
        self.lock = threading.Lock()

    def step(self) -> object:
        with self.lock:
            parts: list[bytes] = []
            size = 0
            while size < STEP_BYTES:
                chunk = next(self.gen, _DONE)
                if chunk is _DONE:
                    if not parts:
                        return _DONE
                    break
                if isinstance(chunk, bytes) and chunk:
                    parts.append(chunk)
                    size += len(chunk)
            return b"".join(parts)

    def close(self) -> None:
        with self.lock:  # waits for a step still running in an abandoned thread
            self.gen.close()


async def _in_threads(
    gen: Generator[bytes, None, None], cancel: Callable[[], None] | None = None
) -> AsyncIterator[bytes]:
    pump = _Pump(gen)
    finished = False
    try:
        while True:
            # abandon_on_cancel: a client that hangs up must not wait for the database
            chunk = await anyio.to_thread.run_sync(pump.step, abandon_on_cancel=True)
            if chunk is _DONE:
                finished = True
                break
            if isinstance(chunk, bytes) and chunk:
                yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            if not finished and cancel is not None:
                await anyio.to_thread.run_sync(cancel)
            await anyio.to_thread.run_sync(pump.close)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class QueryStreamingResponse(StreamingResponse):
    """A query's answer. On one trip to a worker thread it plans the query (``make``: what
    can be refused — names, values, permissions — is refused there), runs it up to its first
    batch, and, if that read the whole result (one batch or less: a root's synapses, a small
    table), encodes it: answered in one body with its length. A longer result then streams,
    batch by batch. An error before the first byte is answered in the API's error shape; a
    client that hangs up meanwhile cancels the query."""

    def __init__(
        self,
        make: Callable[[], QueryResult],
        request: Request,
        *,
        arrow: bool = True,
        ipc_compress: bool = True,
        count: bool = False,
    ) -> None:
        media_type = ARROW_MEDIA_TYPE if arrow or count else "application/json"
        super().__init__(_nothing(), media_type=media_type)
        self.make = make
        self.arrow = arrow
        self.count = count
        self.compression = result_compression(request) if arrow and ipc_compress else None
        self.result: QueryResult | None = None
        self.whole: bytes | None = None
        self._lock = threading.Lock()
        self._gone = False

    def _start(self) -> None:
        result = self.make()
        with self._lock:
            if self._gone:  # the client left while this was planned: nothing is held yet
                return
            self.result = result
        if self.count:
            self.whole = count_body(count_result(result))
            self.init_headers(count_headers(result))
            return
        self.init_headers(result_headers(result))
        encode = arrow_stream(result, self.compression) if self.arrow else json_records(result)
        result.prime()
        if result.complete:
            self.whole = b"".join(encode)
        else:
            self.body_iterator = _in_threads(encode, result.cancel)

    async def _send_whole(self, body: bytes, send: Send) -> None:
        headers = [*self.raw_headers, (b"content-length", str(len(body)).encode("ascii"))]
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _close(self) -> None:
        with self._lock:
            self._gone = True
            result = self.result
        if result is not None:
            result.close()

    def _cancel(self) -> None:
        with self._lock:
            result = self.result
        if result is not None:
            result.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = False
        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await anyio.to_thread.run_sync(self._start, abandon_on_cancel=True)
            except Exception as exc:  # answered below, outside the task group
                failure = exc
            tg.cancel_scope.cancel()
        if gone:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._cancel)
                await anyio.to_thread.run_sync(self._close)
            return
        if failure is not None:
            await anyio.to_thread.run_sync(self._close)
            response = error_response(failure)
            if response is None:
                raise failure
            await response(scope, receive, send)
            return
        if self.whole is not None:
            await self._send_whole(self.whole, send)
            return
        await super().__call__(scope, receive, send)


def _header_text(value: str) -> str:
    # header values must be latin-1 without control characters (a CR/LF would end the
    # header); notices are free text, refused with CR/LF on write, cleaned here as well
    text = value.encode("ascii", "replace").decode("ascii")
    return "".join(c if " " <= c <= "~" else " " for c in text)


def result_headers(result: QueryResult) -> dict[str, str]:
    headers = {
        "dataframe_resolution": ", ".join(str(float(r)) for r in result.resolution),
        "column_names": _header_text(str(result.column_names)),
    }
    if result.warnings:
        headers["Warning"] = _header_text(", ".join(result.warnings))
    return headers


_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


def on_loopback(request: Request) -> bool:
    """Whether the caller is on this machine: a loopback peer that no proxy forwarded for."""
    client = request.scope.get("client") or (None, None)
    if not is_loopback(client[0]):
        return False
    return not any(h in request.headers for h in _FORWARDED)


def result_compression(request: Request) -> str | None:
    """The compression of a result's Arrow buffers: what the client's ``Accept-Encoding``
    asks, except for a caller on this machine (unless ``MATENGINE_QUERY_COMPRESS_LOOPBACK``)."""
    if on_loopback(request) and not settings_of(request).query_compress_loopback:
        return None
    return ipc_compression(request.headers.get("accept-encoding"))


def query_response(
    result: QueryResult | Callable[[], QueryResult],
    request: Request,
    *,
    arrow: bool = True,
    ipc_compress: bool = True,
    count: bool = False,
) -> QueryStreamingResponse:
    """The answer of a query: ``result``, or a function planning it on the answer's first trip
    to a worker thread (a route that is ``async`` then needs no trip of its own)."""
    make = result if callable(result) else (lambda: result)
    return QueryStreamingResponse(make, request, arrow=arrow, ipc_compress=ipc_compress, count=count)


def count_headers(result: QueryResult) -> dict[str, str]:
    headers = {"dataframe_resolution": result_headers(result)["dataframe_resolution"]}
    if result.warnings:
        headers["Warning"] = _header_text(", ".join(result.warnings))
    return headers


def count_body(n: int) -> bytes:
    """A query's ``count=True`` answer: one row, one ``count`` column (MaterializationEngine's
    frame), as an Arrow IPC stream."""
    table = pa.table({"count": pa.array([int(n)], pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
