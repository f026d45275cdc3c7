"""Starting runs: on Celery workers when a broker is configured, else on an in-process worker
thread (the embedded default), and following them until they end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from matengine.config import Settings, get_settings
from matengine.errors import InvalidInput, MatengineError
from matengine.workflows import runs
from matengine.workflows.engine import execute_inline
from matengine.workflows.runs import Run


class NoWorkerOnline(MatengineError):
    status_code = 503


def submit(
    engine: Engine,
    kind: str,
    parameters: dict[str, Any],
    *,
    datastack: str,
    table: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Record a run (taking its locks) and start it; returns the run id at once."""
    import matengine.workflows.registry  # noqa: F401  (registers the workflow kinds)

    settings = settings or get_settings()
    run_id = runs.create_run(engine, kind, parameters, datastack=datastack, table_name=table)
    if settings.broker_url:
        from matengine.workflows.celery_app import send

        send("matengine.start_step", run_id, 0, settings=settings)
    else:
        threading.Thread(
            target=_inline, args=(engine, run_id), daemon=True, name=f"matengine-run-{run_id}"
        ).start()
    return run_id


def _inline(engine: Engine, run_id: int) -> None:
    try:
        execute_inline(engine, run_id)
    except Exception:  # recorded on the run by execute_inline; nothing else to tell here
        pass


def workers_online(settings: Settings | None = None, wait: float | None = None) -> list[str]:
    """Names of Celery workers that answer a ping within ``wait`` seconds ([] if none)."""
    settings = settings or get_settings()
    from matengine.workflows.celery_app import client

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
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = runs.get_run(engine, run_id)
        if on_progress:
            on_progress(run)
        if run.done:
            return run
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run.state} after {timeout} s")
        time.sleep(poll)


def resume(engine: Engine, run_id: int, settings: Settings | None = None) -> None:
    """Start an active run again from where its chunk markers say it is."""
    import matengine.workflows.registry  # noqa: F401

    settings = settings or get_settings()
    run = runs.get_run(engine, run_id)
    if run.done:
        raise MatengineError(f"run {run_id} already ended ({run.state})")
    if settings.broker_url:
        from matengine.workflows.celery_app import send
        from matengine.workflows.engine import _first_unfinished

        index = _first_unfinished(engine, run_id)
        if index is not None:
            send("matengine.start_step", run_id, index, settings=settings)
    else:
        threading.Thread(target=_inline, args=(engine, run_id), daemon=True).start()


SYNC_KINDS = ("ingest", "update_roots", "materialize", "complete")


def sync_parameters(
    engine: Engine,
    kind: str,
    datastack: str,
    *,
    table: str | None = None,
    timestamp: str | None = None,
    days_to_expire: int | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """Parameters of an ingest / update-roots / materialize / complete run, checked."""
    from matengine import catalog
    from matengine.timeutil import to_utc, utcnow

    if kind not in SYNC_KINDS:
        raise MatengineError(f"unknown workflow {kind!r}")
    catalog.get_datastack(engine, datastack)
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
    ):
        raise InvalidInput(f"chunk_rows must be a positive integer, not {chunk_rows!r}", field="chunk_rows")
    if table is not None:
        tables = [catalog.get_table(engine, datastack, table).table_name]
    else:
        tables = [t.table_name for t in catalog.list_tables(engine, datastack)]
    try:
        when = to_utc(timestamp) if timestamp else utcnow()
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"expected an ISO timestamp, got {timestamp!r}", field="timestamp") from None
    params: dict[str, Any] = {
        "tables": tables,
        "timestamp": when.isoformat(),
        "chunk_rows": chunk_rows or get_settings().chunk_rows,
    }
    if days_to_expire is not None:
        params["days_to_expire"] = days_to_expire
    return params
