"""The Celery app and the four generic tasks every workflow runs on.

Broker and result backend come from settings (Redis or RabbitMQ in production). Tasks are
``acks_late`` with ``reject_on_worker_lost``: a worker killed mid-chunk leaves its message
unacknowledged, and the chunk's transaction (rolled back with the dead connection) is simply
redone. The broker alone would hand the message back late on Redis (after the visibility
timeout), so each worker also leases the run tasks it receives in PostgreSQL and heartbeats;
a reaper in every worker sends a dead worker's tasks again within seconds
(:mod:`matengine.workflows.leases`). Transient errors (database or broker restarts,
segmentation server timeouts) retry with exponential backoff.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery, Task
from celery.signals import (
    beat_init,
    task_postrun,
    task_received,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from matengine.config import Settings, get_settings
from matengine.errors import TransientError, translated
from matengine.workflows import broker
from matengine.workflows.broker import client, send  # noqa: F401  (their old home)

log = logging.getLogger(__name__)

# whether a task retries is decided by the error tree alone (docs/design.md §11): each task
# body runs under ``translated``, which turns lost database connections and network faults
# into TransientError at the edge
TRANSIENT = (TransientError,)

app = Celery("matengine")


def configure(settings: Settings | None = None, target: Celery | None = None) -> Celery:
    """Apply settings to the worker-side ``app`` (or to ``target``)."""
    return broker.configure(settings, target or app)


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # a forked pool process must not share the parent's pooled connections (nor close them:
    # the main process's heartbeat uses them)
    from matengine.db.connection import dispose_engines

    dispose_engines(close=False)


_heartbeat: list = []  # the main worker process's heartbeat thread (at most one)


@worker_ready.connect
def _start_heartbeat(sender: object = None, **_: object) -> None:
    """In the worker's main process: beat for this node and reap dead workers' leases."""
    from matengine.db.connection import get_engine
    from matengine.workflows.leases import Heartbeat

    settings = get_settings()
    name = getattr(sender, "hostname", None) or "unknown"

    def resend(task: str, args: list) -> None:
        send(task, *args, settings=settings)

    _heartbeat.append(
        Heartbeat(
            get_engine(), name, queue=settings.queue, send=resend, on_beat=record_unrecorded_leases
        ).start()
    )


@beat_init.connect
def _start_reaper(**_: object) -> None:
    """celery beat reaps too (it is no worker: it writes no heartbeat and leases nothing), so
    a deployment whose workers all died gets their tasks sent again before a new one starts."""
    from matengine.db.connection import get_engine
    from matengine.workflows.leases import Heartbeat

    settings = get_settings()

    def resend(task: str, args: list) -> None:
        send(task, *args, settings=settings)

    _heartbeat.append(Heartbeat(get_engine(), None, queue=settings.queue, send=resend).start())


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    while _heartbeat:
        _heartbeat.pop().stop()


# Leases whose write failed (PostgreSQL down or restarting as the message arrived): the
# heartbeat thread writes them once the database answers again, for the tasks this worker
# still holds (docs/recovery.md, "Dead workers")
_unrecorded: dict[str, dict] = {}  # by task id: a retry's lease replaces its first attempt's
_unrecorded_lock = threading.Lock()


def _take_lease(lease: dict) -> None:
    from matengine.db.connection import get_engine
    from matengine.workflows import leases

    leases.take(get_engine(), **lease)


@task_received.connect
def _lease(request: object = None, **_: object) -> None:
    """In the main process, as a run task's message arrives (reserved, not yet run)."""
    from matengine.workflows import leases

    name = getattr(request, "name", None)
    if name not in leases.RUN_TASKS:
        return
    lease = {
        "task_id": request.id,  # type: ignore[attr-defined]
        "attempt": int((request.request_dict or {}).get("retries") or 0),  # type: ignore[attr-defined]
        "worker": request.hostname,  # type: ignore[attr-defined]
        "queue": get_settings().queue,
        "task": name,
        "args": list(request.args or ()),  # type: ignore[attr-defined]
    }
    try:
        _take_lease(lease)
    except Exception as exc:  # kept, and written by the heartbeat when the database is back
        log.warning("could not lease %s %s yet: %s", name, lease["task_id"], type(exc).__name__)
        with _unrecorded_lock:
            _unrecorded[lease["task_id"]] = lease


def record_unrecorded_leases() -> int:
    """Write the leases that failed to record, for the tasks this worker still holds
    (reserved or running); a task that has run since needs none. Returns how many were
    written; those that fail again stay for the next beat."""
    from celery.worker import state

    with _unrecorded_lock:
        pending = list(_unrecorded.values())
        _unrecorded.clear()
    if not pending:
        return 0
    held = set(state.requests)  # reserved, scheduled (a retry's countdown) or running
    written, left = 0, []
    for lease in pending:
        if lease["task_id"] not in held:
            continue
        try:
            _take_lease(lease)
            written += 1
        except Exception:
            left.append(lease)
    with _unrecorded_lock:
        for lease in left:
            _unrecorded.setdefault(lease["task_id"], lease)
    return written


@task_postrun.connect
def _release(task_id: str | None = None, task: Task | None = None, **_: object) -> None:
    from matengine.db.connection import get_engine
    from matengine.workflows import leases

    if task is None or task.name not in leases.RUN_TASKS or task_id is None:
        return
    try:
        leases.release(get_engine(), task_id, int(task.request.retries or 0))
    except Exception as exc:  # the lease then outlives the task: a harmless second delivery
        log.warning("could not release lease of %s: %s", task_id, exc)


class RunTask(Task):
    """Marks the run FAILED when a task gives up (a non-transient error or retries exhausted)."""

    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 8
    acks_late = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: ANN001
        from matengine.db.connection import get_engine
        from matengine.workflows import runs

        run_id = args[0] if args else kwargs.get("run_id")
        if run_id is not None:
            runs.finish_run(get_engine(), run_id, "FAILED", f"{type(exc).__name__}: {exc}")

    def on_retry(self, exc, task_id, args, kwargs, einfo):  # noqa: ANN001
        from matengine.db.connection import get_engine
        from matengine.workflows import runs

        try:
            runs.record_error(get_engine(), args[0], f"retrying after {type(exc).__name__}: {exc}")
        except Exception:  # the database may be the thing that is down
            log.warning("could not record retry of run %s", args[0])


@app.task(base=RunTask, name="matengine.start_step")
@translated
def start_step(run_id: int, index: int) -> int:
    from matengine.db.connection import get_engine
    from matengine.workflows import engine as wf

    engine = get_engine()
    if wf.run_is_over(engine, run_id):
        return 0
    pending = wf.plan_step(engine, run_id, index)
    if not pending:
        if wf.claim_finish(engine, run_id, index) or wf.step_state(engine, run_id, index) == "FINISHING":
            finish_step.delay(run_id, index)
    for chunk in pending:
        run_chunk.delay(run_id, index, chunk)
    return len(pending)


@app.task(base=RunTask, name="matengine.run_chunk")
@translated
def run_chunk(run_id: int, index: int, chunk: int) -> None:
    from matengine.db.connection import get_engine
    from matengine.workflows import engine as wf

    if wf.run_chunk(get_engine(), run_id, index, chunk):
        finish_step.delay(run_id, index)


@app.task(base=RunTask, name="matengine.finish_step")
@translated
def finish_step(run_id: int, index: int) -> None:
    from matengine.db.connection import get_engine
    from matengine.workflows import engine as wf

    nxt = wf.finish_step(get_engine(), run_id, index)
    if nxt is not None:
        start_step.delay(run_id, nxt)


@app.task(name="matengine.tick")
def tick() -> list[int]:
    """Every minute (celery beat): start due scheduled runs and remove expired versions."""
    from matengine.db.connection import get_engine
    from matengine.workflows.schedule import run_due

    return run_due(get_engine())


@app.task(name="matengine.ping")
def ping(x: int) -> int:
    return x


@app.task(name="matengine.sum")
def total(values: list[int]) -> int:
    return sum(values)


def import_workflows() -> None:
    import matengine.workflows.registry  # noqa: F401


import_workflows()
