"""Starting runs: on Celery workers when a broker is configured, else on an in-process worker
(the embedded default: a thread of this process, or with ``detach`` a child process of its own
that outlives the command), and following them until they end."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from matengine.config import Settings, get_settings
from matengine.errors import Conflict, NoWorkerOnline
from matengine.workflows import runs
from matengine.workflows.engine import execute_inline
from matengine.workflows.params import SYNC_KINDS, SyncParams, WorkflowParams
from matengine.workflows.runs import Run


def submit(
    engine: Engine,
    kind: str,
    parameters: dict[str, Any],
    *,
    datastack: str,
    table: str | None = None,
    settings: Settings | None = None,
    detach: bool = False,
) -> int:
    """Record a run (taking its locks) and start it; returns the run id at once.

    Without a broker the run goes to an in-process worker: a thread of this process, or with
    ``detach`` a child process that outlives this one (a command that exits at once)."""
    import matengine.workflows.registry  # noqa: F401  (registers the workflow kinds)

    settings = settings or get_settings()
    queue = settings.queue if settings.broker_url else None
    run_id = runs.create_run(engine, kind, parameters, datastack=datastack, table_name=table, queue=queue)
    if settings.broker_url:
        from matengine.workflows.broker import send

        send("matengine.start_step", run_id, 0, settings=settings)
    elif detach:
        start_detached(run_id, settings)
    else:
        _start_inline(engine, run_id)
    return run_id


def submit_params(
    engine: Engine, params: WorkflowParams, settings: Settings | None = None, *, detach: bool = False
) -> int:
    """Record and start a run of ``params`` (built and checked by its ``build``), locking
    what its parameter object says."""
    return submit(
        engine,
        params.kind,
        params.to_json(),
        datastack=params.datastack,
        table=params.lock_table,
        settings=settings,
        detach=detach,
    )


def start_detached(run_id: int, settings: Settings | None = None) -> subprocess.Popen[bytes]:
    """Run ``run_id`` in a new session's process (:mod:`matengine.workflows.detached`), with
    this process's settings; its output goes to ``MATENGINE_HOME/runs/<id>.log``."""
    from matengine.config import _overrides
    from matengine.db.connection import resolve_database_url

    settings = settings or get_settings()
    env = dict(os.environ)
    for key, value in _overrides.items():  # CLI flags win over the environment, there too
        env[f"MATENGINE_{key.upper()}"] = str(value)
    env["MATENGINE_DATABASE_URL"] = resolve_database_url(settings)
    env["MATENGINE_HOME"] = str(settings.home)
    logs = settings.home / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{run_id}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "matengine.workflows.detached", str(run_id)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C or hang-up of the command does not reach it
            close_fds=True,
        )


# runs going on in a thread of this process -> set when that thread is done with the run, so
# that wait_for returns the moment it ends instead of at its next poll
_ENDED: dict[int, threading.Event] = {}
_ended_lock = threading.Lock()


def _start_inline(engine: Engine, run_id: int) -> None:
    ended = threading.Event()
    with _ended_lock:
        _ENDED[run_id] = ended
    threading.Thread(
        target=_inline, args=(engine, run_id, ended), daemon=True, name=f"matengine-run-{run_id}"
    ).start()


def _inline(engine: Engine, run_id: int, ended: threading.Event) -> None:
    try:
        execute_inline(engine, run_id)
    except Exception:  # recorded on the run by execute_inline; nothing else to tell here
        pass
    finally:
        ended.set()
        with _ended_lock:
            if _ENDED.get(run_id) is ended:
                del _ENDED[run_id]


def workers_online(settings: Settings | None = None, wait: float | None = None) -> list[str]:
    """Names of Celery workers that answer a ping within ``wait`` seconds ([] if none)."""
    settings = settings or get_settings()
    from matengine.workflows.broker import client

    app = client(settings)
    deadline = time.monotonic() + (settings.worker_wait if wait is None else wait)
    while True:
        replies = app.control.ping(timeout=1.0) or []
        if replies:
            return sorted(name for r in replies for name in r)
        if time.monotonic() >= deadline:
            return []


def ensure_workers(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    if settings.broker_url and not workers_online(settings):
        raise NoWorkerOnline(
            f"no Celery worker answers on {settings.broker_url}: start one with "
            "`matengine worker` (the run stays queued and starts when a worker comes up)"
        )


def wait_for(
    engine: Engine,
    run_id: int,
    *,
    poll: float = 0.3,
    on_progress: Callable[[Run], None] | None = None,
    timeout: float | None = None,
) -> Run:
    """Follow a run until it ends, reading it every ``poll`` seconds (``on_progress`` gets each
    reading); a run going on in a thread of this process is read again the moment it ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _ended_lock:
            ended = _ENDED.get(run_id)
        run = runs.get_run(engine, run_id)
        if on_progress:
            on_progress(run)
        if run.done:
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run.state} after {timeout} s")
        if ended is not None:
            ended.wait(poll)
        else:
            time.sleep(poll)


def resume(engine: Engine, run_id: int, settings: Settings | None = None) -> None:
    """Start an active run again from where its chunk markers say it is."""
    import matengine.workflows.registry  # noqa: F401

    settings = settings or get_settings()
    run = runs.get_run(engine, run_id)
    if run.done:
        raise Conflict(f"run {run_id} already ended ({run.state})")
    if settings.broker_url:
        from matengine.workflows.broker import send
        from matengine.workflows.engine import _first_unfinished

        index = _first_unfinished(engine, run_id)
        if index is not None:
            send("matengine.start_step", run_id, index, settings=settings)
    else:
        _start_inline(engine, run_id)


def sync_parameters(
    engine: Engine,
    kind: str,
    datastack: str,
    *,
    table: str | None = None,
    timestamp: str | None = None,
    days_to_expire: int | None = None,
    chunk_rows: int | None = None,
    roots_per_chunk: int | None = None,
    roots_plan: str = "auto",
) -> dict[str, Any]:
    """Stored parameters of an ingest / update-roots / materialize / complete run, checked
    (:meth:`SyncParams.build`; kept for callers that submit by kind and dict)."""
    return SyncParams.build(
        engine,
        kind,
        datastack,
        table=table,
        timestamp=timestamp,
        days_to_expire=days_to_expire,
        chunk_rows=chunk_rows,
        roots_per_chunk=roots_per_chunk,
        roots_plan=roots_plan,
    ).to_json()


__all__ = ["SYNC_KINDS", "submit", "submit_params", "sync_parameters", "wait_for", "resume"]
