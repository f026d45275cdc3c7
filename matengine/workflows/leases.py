"""Dead-worker recovery: worker heartbeats and task leases in PostgreSQL (docs/recovery.md).

A broker hands back a killed worker's unacknowledged messages only when it notices: RabbitMQ
at once (the connection drops), Redis only after the visibility timeout (900 s by default).
So matengine keeps its own record and does not wait for the broker:

* every process that runs workflow tasks has a row in ``workers`` and rewrites its
  ``heartbeat`` every ``worker_heartbeat`` seconds (a thread of the Celery worker's main
  process, or of the in-process runner);
* a Celery worker takes a *lease* on each run task as it receives the message (``task_leases``:
  task, arguments, worker) and drops it when the task has run;
* a *reaper* runs in every worker (and in beat), so there is no single point of failure: every
  ``reaper_interval`` seconds it deletes the leases of workers silent for ``worker_dead_after``
  seconds and sends those tasks again. Two reapers never send one lease twice (the DELETE
  decides), and a task sent twice anyway is harmless: a chunk's marker in ``run_chunks`` commits
  with its rows, so a second delivery finds it done.

A run is *stalled* when no live worker can make progress on it (none heartbeats on its queue,
or its in-process runner is gone) and it has made none for ``worker_dead_after`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from matengine.config import Settings, get_settings
from matengine.db import bookkeeping
from matengine.db import metadata as m
from matengine.timeutil import utcnow

log = logging.getLogger(__name__)

# the tasks that carry a run forward; anything else (ping, tick) is not worth a lease
RUN_TASKS = ("matengine.start_step", "matengine.run_chunk", "matengine.finish_step")


def inline_worker_name(run_id: int) -> str:
    return f"inline-run-{run_id}.{os.getpid()}@{socket.gethostname()}"


def register(engine: Engine, name: str, *, queue: str | None = None, run_id: int | None = None) -> None:
    """Record (or re-record) a worker as alive. ``started`` moves on: leases that an earlier
    process of the same name took are that process's, and count as dead."""
    now = utcnow()
    values = {"queue": queue, "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid()}
    stmt = pg_insert(m.workers).values(name=name, started=now, heartbeat=now, **values)
    with engine.begin() as conn:
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[m.workers.c.name], set_=dict(values, started=now, heartbeat=now)
            )
        )
        bookkeeping.forget_old_workers(conn)


def heartbeat(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(m.workers).where(m.workers.c.name == name).values(heartbeat=utcnow()))


def retire(engine: Engine, name: str) -> None:
    """A clean stop: the row stays (it says when the worker was last seen) but no longer beats."""
    heartbeat(engine, name)


def take(
    engine: Engine, *, task_id: str, attempt: int, worker: str, queue: str, task: str, args: list[Any]
) -> None:
    """Lease a received task to ``worker`` (a redelivered message moves its lease)."""
    run_id = args[0] if args and isinstance(args[0], int) else None
    values = {"attempt": attempt, "worker": worker, "queue": queue, "received": utcnow()}
    stmt = pg_insert(m.task_leases).values(task_id=task_id, run_id=run_id, task=task, args=args, **values)
    with engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_update(index_elements=[m.task_leases.c.task_id], set_=values))


def release(engine: Engine, task_id: str, attempt: int) -> None:
    """The task ran (or failed for good, or handed over to its retry, a lease of its own)."""
    with engine.begin() as conn:
        conn.execute(
            delete(m.task_leases).where(
                m.task_leases.c.task_id == task_id, m.task_leases.c.attempt == attempt
            )
        )


@dataclass(frozen=True)
class Reaped:
    task_id: str
    task: str
    args: list[Any]
    worker: str


def reap(
    engine: Engine,
    queue: str,
    send: Callable[[str, list[Any]], None],
    settings: Settings | None = None,
) -> list[Reaped]:
    """Send again every task on ``queue`` leased by a dead worker; return what was sent.

    A lease counts as dead when its worker is silent, unknown, or restarted since it took it.
    Leases of runs that have ended are dropped without sending."""
    settings = settings or get_settings()
    sent: list[Reaped] = []
    with engine.begin() as conn:
        rows = bookkeeping.take_dead_leases(conn, queue, float(settings.worker_dead_after))
        for r in rows:
            if r.run_state not in (None, "PENDING", "RUNNING"):
                continue
            send(r.task, list(r.args))  # before the commit: a failed send keeps the lease
            sent.append(Reaped(r.task_id, r.task, list(r.args), r.worker))
    for lease in sent:
        log.warning("re-sent %s%s: worker %s is dead", lease.task, tuple(lease.args), lease.worker)
    return sent


class Heartbeat:
    """A daemon thread that keeps a worker's row alive and, for Celery workers, reaps.
    With no ``name`` it only reaps (celery beat: a reaper, but not a worker)."""

    def __init__(
        self,
        engine: Engine,
        name: str | None,
        *,
        queue: str | None = None,
        run_id: int | None = None,
        send: Callable[[str, list[Any]], None] | None = None,
        settings: Settings | None = None,
        on_beat: Callable[[], object] | None = None,
    ) -> None:
        self.engine, self.name, self.queue, self.run_id, self.send = engine, name, queue, run_id, send
        self.on_beat = on_beat  # more work of the worker's own on each beat (late leases)
        self.settings = settings or get_settings()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, daemon=True, name=f"matengine-heartbeat-{name or 'reaper'}"
        )

    def start(self) -> Heartbeat:
        if self.name is not None:
            register(self.engine, self.name, queue=self.queue, run_id=self.run_id)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.name is None:
            return
        try:
            retire(self.engine, self.name)
        except Exception:  # the database may be what is gone
            log.warning("could not record that worker %s stopped", self.name)

    def _loop(self) -> None:
        beat_every = float(self.settings.worker_heartbeat)
        reap_every = float(self.settings.reaper_interval)
        next_beat = next_reap = time.monotonic()
        registered = self.name is not None  # start() has just beaten: no second beat now
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + beat_every
                    if self.name is not None and not registered:
                        heartbeat(self.engine, self.name)
                    registered = False
                    if self.on_beat is not None:
                        self.on_beat()
                if self.send is not None and self.queue is not None and now >= next_reap:
                    next_reap = now + reap_every
                    reap(self.engine, self.queue, self.send, self.settings)
            except Exception as exc:  # the database may be restarting: try again next time
                log.warning("heartbeat of %s failed: %s", self.name, exc)
            due = min(next_beat, next_reap) if self.send is not None else next_beat
            self._stop.wait(max(0.05, due - time.monotonic()))


# ------------------------------------------------------------------ stalled runs
@dataclass(frozen=True)
class Stall:
    """Why an active run makes no progress, and what to do about it."""

    code: str  # no_worker / runner_gone
    message: str


def stalls(conn: Connection, run_ids: Iterable[int], settings: Settings | None = None) -> dict[int, Stall]:
    """The stalled runs among ``run_ids`` (active ones only), with their reasons."""
    settings = settings or get_settings()
    ids = list(run_ids)
    if not ids:
        return {}
    rows = bookkeeping.run_liveness(conn, ids, float(settings.worker_dead_after))
    out: dict[int, Stall] = {}
    for r in rows:
        if r.live or not r.idle:
            continue
        seen = f"last seen {r.last_seen.isoformat()}" if r.last_seen else "none seen"
        if r.queue is not None:
            out[r.id] = Stall(
                "no_worker",
                f"no live worker on queue {r.queue!r} ({seen}); no progress since "
                f"{r.progress.isoformat()}: start one with `matengine worker`",
            )
        else:
            out[r.id] = Stall(
                "runner_gone",
                f"its in-process runner is gone ({seen}); no progress since {r.progress.isoformat()}: "
                f"`matengine resume {r.id}` continues it, `matengine cancel {r.id}` ends it",
            )
    return out


def live_workers(conn: Connection, queue: str, settings: Settings | None = None) -> list[str]:
    """Names of the Celery workers on ``queue`` that beat recently."""
    settings = settings or get_settings()
    return bookkeeping.live_worker_names(conn, queue, float(settings.worker_dead_after))
