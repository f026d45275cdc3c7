"""The advisory locks matengine takes in PostgreSQL (docs/design.md §4).

Workflow locks are *not* here: they are ``matengine.run_locks`` rows, held for a run's whole
life and freed by ``finish_run`` (:mod:`matengine.workflows.runs`). What is here lasts one
transaction at most, so it can never be left behind by a dead worker:

* the write barrier of a datastack — every annotation write holds it shared, a version passes
  it exclusively for an instant;
* short exclusive sections (checking and taking run locks, numbering a version), so that two
  sessions cannot both see "free".

Two-key advisory locks: the first key says which kind, the second is ``hashtext`` of the
datastack name. A hash collision only makes two unrelated names wait for each other, never lets
two holders of one name through.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import Connection, text


class LockKind(IntEnum):
    # annotation writers hold it shared for their transaction; a version takes it exclusive for
    # an instant so that every write stamped before the version's time has committed
    WRITE_BARRIER = 7101
    # held while a run checks and takes its run_locks rows (runs.create_run)
    RUN_LOCKS = 7104
    # held while a version number is chosen for a datastack (materialize's prepare step)
    VERSION_NUMBER = 7105


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


def hold_exclusive(conn: Connection, kind: LockKind, datastack: str) -> None:
    """An exclusive lock of ``kind`` on ``datastack`` until ``conn``'s transaction ends."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k, hashtext(:n))"), {"k": int(kind), "n": datastack})
