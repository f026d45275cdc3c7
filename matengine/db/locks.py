"""Locks held in PostgreSQL (advisory locks), never in process memory, so they hold across
workers and machines and vanish with the session that held them (a killed worker frees its locks).

Two-key advisory locks: the first key says what kind of lock, the second is ``hashtext`` of the
name. A hash collision only makes two unrelated names wait for each other, never lets two
holders of one name through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

from sqlalchemy import Connection, text

from matengine.errors import Conflict


class LockKind(IntEnum):
    # annotation writers hold it shared for their transaction; a version takes it exclusive for
    # an instant so that every write stamped before the version's time has committed
    WRITE_BARRIER = 7101
    # one workflow at a time per (datastack, table)
    TABLE = 7102
    # one materialization (or complete run) at a time per datastack
    DATASTACK = 7103


def hold_write_barrier_shared(conn: Connection, datastack: str) -> None:
    """Call at the start of every annotation-writing transaction (released at its end)."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock_shared(:k, hashtext(:n))"),
        {"k": int(LockKind.WRITE_BARRIER), "n": datastack},
    )


def pass_write_barrier(conn: Connection, datastack: str) -> None:
    """Wait until every annotation write in flight on ``datastack`` has committed.

    Takes and at once releases the exclusive side of the barrier. Writers stamp ``created`` /
    ``deleted`` with ``clock_timestamp()`` after taking the shared side, so once this returns
    at time L, every row stamped at or before L is committed, and any later write is stamped
    after L.
    """
    conn.execute(
        text("SELECT pg_advisory_lock(:k, hashtext(:n))"),
        {"k": int(LockKind.WRITE_BARRIER), "n": datastack},
    )
    conn.execute(
        text("SELECT pg_advisory_unlock(:k, hashtext(:n))"),
        {"k": int(LockKind.WRITE_BARRIER), "n": datastack},
    )


@contextmanager
def session_lock(conn: Connection, kind: LockKind, name: str, *, wait: float | None = 0.0) -> Iterator[None]:
    """Hold a session-level lock on ``name`` for the block.

    ``wait=0`` refuses at once if another session holds it; ``wait=None`` waits forever;
    otherwise waits up to ``wait`` seconds. Refusal raises :class:`Conflict`.
    """
    deadline = None if wait is None else time.monotonic() + wait
    params = {"k": int(kind), "n": name}
    while True:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k, hashtext(:n))"), params).scalar_one()
        conn.commit()
        if got:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise Conflict(f"{name!r} is busy: another run holds its {kind.name.lower()} lock")
        time.sleep(0.2)
    try:
        yield
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(:k, hashtext(:n))"), params)
        conn.commit()
