"""Read query rows from PostgreSQL in column batches of bounded size.

The fast path runs ``COPY (SELECT …) TO STDOUT (FORMAT binary)`` and parses it with numpy:
when every selected value has a fixed width, every row has the same byte length, so a batch
of rows is one structured-array view (no Python object per value). Nulls would break the
fixed width, so a nullable column is sent as ``COALESCE(col, 0)`` plus a ``col IS NULL``
flag. Columns of variable width (text) take the slow path, a server-side (named) cursor.
Both read ``batch_rows`` rows at a time, so memory is bounded whatever the result size.

Work is bounded too (:class:`QueryGuard`): PostgreSQL must deliver each batch within the
query timeout (``MATENGINE_QUERY_TIMEOUT``), else the query is cancelled and
:class:`~matengine.errors.QueryTimeout` raised. The clock runs only while we wait for rows,
so a large result streamed to a slow client is not cut, while a query that finds nothing
for a minute (a pathological filter) is. The guard also lets another thread cancel the
query at once when the HTTP client goes away.

COPY cannot take server-side parameters; psycopg binds the values client-side with its own
literal quoting (never string formatting of ours).
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import psycopg.generators
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.waiting import Wait

from matengine.errors import QueryTimeout
from matengine.query.columns import ColKind
from matengine.query.watchdog import WATCHDOG

BATCH_ROWS = 16_384
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# COPY binary timestamps count µs from 2000-01-01; batches carry µs since the Unix epoch
_PG_EPOCH_US = 946_684_800_000_000
_WIDTH = {ColKind.INT: ">i8", ColKind.FLOAT: ">f8", ColKind.BOOL: "u1", ColKind.TIME: ">i8"}
_DEFAULT = {
    ColKind.INT: "0",
    ColKind.FLOAT: "0::float8",
    ColKind.BOOL: "false",
    ColKind.TIME: "'2000-01-01 00:00:00+00'::timestamptz",
}
_NUMPY = {ColKind.INT: np.int64, ColKind.FLOAT: np.float64, ColKind.BOOL: np.bool_, ColKind.TIME: np.int64}


@dataclass(frozen=True)
class Fetch:
    """One fetched value: ``expr`` is SQL we built from validated, quoted names.

    ``nullable`` values travel with a null flag; others are sent as ``COALESCE(expr, 0)``
    (or false/epoch), so a stray null can never break the fixed row width.
    """

    key: str
    expr: str
    kind: ColKind
    nullable: bool = True


@dataclass
class Batch:
    """Column arrays of one batch. Absent from ``nulls`` means no nulls in that column."""

    values: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def take(self, index: np.ndarray | slice) -> Batch:
        return Batch(
            {k: v[index] for k, v in self.values.items()}, {k: v[index] for k, v in self.nulls.items()}
        )


class QueryGuard:
    """The connection a query reads from, watched: cancelled when a batch takes longer than
    ``timeout`` seconds to arrive, or when :meth:`cancel` is called (from any thread)."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.expired = False
        self.cancelled = False
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def attach(self, conn: psycopg.Connection) -> None:
        with self._lock:
            self._conn = conn
        if self.cancelled:
            self._cancel_query()

    def detach(self) -> None:
        with self._lock:
            self._conn = None

    def _cancel_query(self) -> None:
        with self._lock:
            conn = self._conn
        if conn is not None:
            try:
                conn.cancel_safe(timeout=10)
            except Exception:  # the server is gone or the query already ended: nothing to stop
                pass

    def cancel(self) -> None:
        """Stop the running query now (the client went away)."""
        self.cancelled = True
        self._cancel_query()

    def _expire(self, watching: threading.Event) -> None:
        # a cancel that reaches PostgreSQL before the statement runs (psycopg may still be
        # sending a large one) is ignored: repeat it until the wait ends
        self.expired = True
        while watching.is_set():
            self._cancel_query()
            time.sleep(0.25)

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Time one wait for rows; turn a cancellation into the error that says why."""
        deadline = None
        watching = threading.Event()
        watching.set()
        if self.timeout is not None and self.timeout > 0:
            deadline = WATCHDOG.arm(self.timeout, lambda: self._expire(watching))
        try:
            yield
        except psycopg.errors.QueryCanceled:
            if self.expired and not self.cancelled:
                raise QueryTimeout(
                    f"the query produced no batch of rows within {self.timeout:g} s "
                    "(MATENGINE_QUERY_TIMEOUT) and was cancelled: narrow it with filters or a limit"
                ) from None
            raise
        finally:
            watching.clear()
            if deadline is not None:
                deadline.disarm()


def fixed_width(fetches: list[Fetch]) -> bool:
    return all(f.kind in _WIDTH for f in fetches)


def _copy_select(fetches: list[Fetch]) -> str:
    items = []
    for f in fetches:
        items.append(f"COALESCE({f.expr}, {_DEFAULT[f.kind]})")
        if f.nullable:
            items.append(f"(({f.expr}) IS NULL)")
    return ", ".join(items)


def _row_dtype(fetches: list[Fetch]) -> np.dtype:
    parts: list[tuple[str, str]] = [("n", ">i2")]
    for i, f in enumerate(fetches):
        parts += [(f"l{i}", ">i4"), (f"v{i}", _WIDTH[f.kind])]
        if f.nullable:
            parts += [(f"ln{i}", ">i4"), (f"n{i}", "u1")]
    return np.dtype(parts)


def _parse_rows(raw: bytes | bytearray, n: int, dtype: np.dtype, fetches: list[Fetch]) -> Batch:
    """Column arrays (native byte order, copies) from the first ``n`` rows of ``raw``."""
    rows = np.frombuffer(raw, dtype=dtype, count=n)
    batch = Batch({})
    for i, f in enumerate(fetches):
        values: np.ndarray = rows[f"v{i}"].astype(_NUMPY[f.kind])
        if f.kind is ColKind.TIME:
            values += _PG_EPOCH_US
        batch.values[f.key] = values
        if f.nullable:
            mask = rows[f"n{i}"].astype(bool)
            if mask.any():
                batch.nulls[f.key] = mask
    return batch


class CopyBinaryParser:
    """Rows of a ``COPY … TO STDOUT (FORMAT binary)`` stream of fixed-width rows (as
    :func:`_copy_select` asks for), fed in pieces cut anywhere: :meth:`feed` the bytes, take
    the complete rows so far with :meth:`take`, and :meth:`end` checks what is left is the
    trailer. Pure (no connection), so it is tested byte for byte on its own."""

    def __init__(self, fetches: list[Fetch]) -> None:
        self.fetches = fetches
        self.dtype = _row_dtype(fetches)
        self._buf = bytearray()
        self._header_done = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        # appending to a bytearray lets each message buffer go at once; holding thousands of
        # them in a list until a join was measured twice as slow
        if not self._buf and isinstance(data, bytearray):
            self._buf = data  # a batch's worth read at once: taken over, not copied
        else:
            self._buf += data

    def take(self) -> Batch | None:
        """The complete rows received so far (None if there are none); a partial row stays."""
        buf = self._buf
        if not self._header_done:
            if len(buf) < 19:
                return None
            if bytes(buf[:11]) != _SIGNATURE:
                raise RuntimeError("unexpected COPY binary header")
            extension = struct.unpack(">i", buf[15:19])[0]
            if len(buf) < 19 + extension:
                return None
            del buf[: 19 + extension]
            self._header_done = True
        n = len(buf) // self.dtype.itemsize
        if not n:
            return None
        batch = _parse_rows(buf, n, self.dtype, self.fetches)
        self._buf = bytearray(buf[n * self.dtype.itemsize :])
        return batch

    def end(self) -> None:
        """The stream ended: what is left must be the 2-byte trailer (or nothing)."""
        if not self._header_done:
            raise RuntimeError("unexpected COPY binary header")
        if bytes(self._buf) not in (b"", b"\xff\xff"):
            raise RuntimeError("truncated COPY binary stream")


def _copy_messages(conn: psycopg.Connection, buf: bytearray, most: int) -> PQGen[Any]:
    """Up to ``most`` messages of a running ``COPY … TO STDOUT``, appended to ``buf``, waiting
    for the server only when nothing is buffered; returns the final result once the COPY ended
    (None before). psycopg's own reader (``Copy.read``) goes through the connection's wait
    loop once per message, i.e. once per row: this one, once per batch, is several times
    faster."""
    pgconn = conn.pgconn
    get = pgconn.get_copy_data
    taken = 0
    while taken < most:
        nbytes, data = get(1)
        if nbytes > 0:
            buf += data
            taken += 1
        elif nbytes == 0:  # nothing buffered: wait for the server
            while not (yield Wait.R):
                continue
            pgconn.consume_input()
        else:  # the COPY ended: its final result
            results = yield from psycopg.generators.fetch_many(pgconn)
            if len(results) != 1:
                raise psycopg.ProgrammingError("you cannot mix COPY with other operations")
            if results[0].status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.errors.error_from_result(results[0], encoding=conn.info.encoding)
            return results[0]
    return None


def _copy_reader(conn: psycopg.Connection, copy: psycopg.Copy) -> Callable[[CopyBinaryParser, int], bool]:
    """``read(parser, n)``: feed up to ``n`` rows of ``copy`` to ``parser``; True once it ended.

    Uses :func:`_copy_messages` when psycopg's ``Copy`` keeps the flag it does today (it must
    know the COPY is over); else psycopg's own per-row reads."""
    if not hasattr(copy, "_finished"):

        def slow(parser: CopyBinaryParser, n: int) -> bool:
            for _ in range(n):
                data = copy.read()
                if not data:
                    return True
                parser.feed(data)
            return False

        return slow

    def fast(parser: CopyBinaryParser, n: int) -> bool:
        if copy._finished:
            return True
        buf = bytearray()
        try:
            result = conn.wait(_copy_messages(conn, buf, n))
        finally:
            if buf:
                parser.feed(buf)
        if result is None:
            return False
        copy._finished = True  # the COPY's final result is consumed: nothing left to read
        return True

    return fast


def copy_batches(
    conn: psycopg.Connection,
    select_sql: str,
    params: Mapping[str, Any],
    fetches: list[Fetch],
    batch_rows: int = BATCH_ROWS,
    guard: QueryGuard | None = None,
) -> Iterator[Batch]:
    """Batches of ``SELECT <fetches> <select_sql>`` (``select_sql`` starts at FROM)."""
    guard = guard or QueryGuard()
    guard.attach(conn)
    statement = f"COPY (SELECT {_copy_select(fetches)} {select_sql}) TO STDOUT (FORMAT binary)"
    parser = CopyBinaryParser(fetches)
    with conn.cursor() as cur, ExitStack() as stack:
        with guard.watch():  # PostgreSQL may run the query before it answers the COPY
            copy = stack.enter_context(cur.copy(statement, params or None))
        read = _copy_reader(conn, copy)
        while True:
            # PostgreSQL sends one message per row: gather a batch's worth, then parse it
            # whole, whatever the message boundaries (leftover bytes carry over)
            with guard.watch():
                ended = read(parser, batch_rows)
                if ended and (guard.expired or guard.cancelled):
                    try:
                        parser.end()
                    except RuntimeError:  # a cancelled COPY just ends early: say why
                        raise psycopg.errors.QueryCanceled("canceling statement") from None
            batch = parser.take()
            if batch is not None:
                yield batch
            if ended:
                parser.end()
                return


def _to_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def cursor_batches(
    conn: psycopg.Connection,
    select_sql: str,
    params: Mapping[str, Any],
    fetches: list[Fetch],
    batch_rows: int = BATCH_ROWS,
    guard: QueryGuard | None = None,
) -> Iterator[Batch]:
    """Slow path for columns of variable width: a server-side cursor, ``batch_rows`` at a time."""
    guard = guard or QueryGuard()
    guard.attach(conn)
    items = ", ".join(f.expr for f in fetches)
    with conn.cursor(name="matengine_query") as cur:
        cur.itersize = batch_rows
        with guard.watch():
            cur.execute(f"SELECT {items} {select_sql}", params or None)
        while True:
            with guard.watch():
                rows = cur.fetchmany(batch_rows)
            if not rows:
                return
            batch = Batch({})
            for i, f in enumerate(fetches):
                raw = [r[i] for r in rows]
                mask = np.fromiter((v is None for v in raw), bool, len(raw))
                if f.kind is ColKind.TEXT:
                    values = np.array(["" if v is None else v for v in raw], dtype=object)
                elif f.kind is ColKind.TIME:
                    values = np.array([0 if v is None else _to_us(v) for v in raw], np.int64)
                else:
                    values = np.array([0 if v is None else v for v in raw], _NUMPY[f.kind])
                batch.values[f.key] = values
                if mask.any():
                    batch.nulls[f.key] = mask
            yield batch


def read_batches(
    conn: psycopg.Connection,
    select_sql: str,
    params: Mapping[str, Any],
    fetches: list[Fetch],
    batch_rows: int = BATCH_ROWS,
    guard: QueryGuard | None = None,
) -> Iterator[Batch]:
    reader = copy_batches if fixed_width(fetches) else cursor_batches
    return reader(conn, select_sql, params, fetches, batch_rows, guard)
