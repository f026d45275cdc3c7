"""Periodic work, driven by ``celery beat`` ticking ``matengine.tick`` every minute.

Schedules live in the database (``datastacks.schedule``, a crontab ``m h dom mon dow``), so a
schedule set by CLI or API takes effect without restarting beat. A due datastack gets a
``complete`` run; a due live schedule (``datastacks.live_schedule``) gets a ``sync_live`` run
(ingest + update-roots, no version). If a previous run is still going, the new one is refused
by the run locks, so runs are never doubled. Expired versions are removed on every tick.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery.schedules import crontab
from sqlalchemy import Engine, select

from matengine import catalog
from matengine.db import metadata as m
from matengine.errors import Conflict, InvalidInput
from matengine.timeutil import utcnow

log = logging.getLogger(__name__)
TICK_SECONDS = 60


def parse_schedule(expr: str, now: datetime | None = None) -> crontab:
    parts = expr.split() if isinstance(expr, str) else []
    if len(parts) != 5:
        raise InvalidInput(f"schedule {expr!r} is not a crontab 'm h dom mon dow'")
    minute, hour, dom, month, dow = parts
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=dom,
            month_of_year=month,
            day_of_week=dow,
            nowfun=(lambda: now) if now else None,
        )
    except Exception as exc:
        raise InvalidInput(f"schedule {expr!r}: {exc}") from None


def is_due(expr: str, last_start: datetime | None, now: datetime) -> bool:
    """True if a cron tick fell in (last_start, now]. A datastack never run looks back one
    beat interval only: a new schedule starts at its next tick, not retroactively."""
    since = last_start or (now - timedelta(seconds=TICK_SECONDS))
    return parse_schedule(expr, now).remaining_estimate(since).total_seconds() <= 0


def run_due(engine: Engine, now: datetime | None = None) -> list[int]:
    """Start ``complete`` for every datastack whose schedule is due, and ``sync_live``
    (ingest + update-roots, no version) for every one whose live schedule is due; remove
    expired versions. Returns run ids."""
    from matengine.versions import remove_expired

    now = now or utcnow()
    started = []
    for ds in catalog.list_datastacks(engine):
        for kind, expr in (("complete", ds.schedule), ("sync_live", ds.live_schedule)):
            if expr:
                run_id = _start_if_due(engine, ds.name, kind, expr, now)
                if run_id is not None:
                    started.append(run_id)
    for r in remove_expired(engine):
        log.info("removed version %s of %s: %s", r.version, r.datastack, r.reason)
    return started


def _start_if_due(engine: Engine, datastack: str, kind: str, expr: str, now: datetime) -> int | None:
    from matengine.workflows.params import SyncParams
    from matengine.workflows.submit import submit_params

    with engine.connect() as conn:
        last = conn.execute(
            select(m.workflow_runs.c.created)
            .where(
                m.workflow_runs.c.datastack == datastack,
                m.workflow_runs.c.kind == kind,
                m.workflow_runs.c.parameters["scheduled"].astext == "true",
            )
            .order_by(m.workflow_runs.c.created.desc())
            .limit(1)
        ).scalar()
    if not is_due(expr, last, now):
        return None
    params = SyncParams.build(engine, kind, datastack, scheduled=True)
    try:
        return submit_params(engine, params)
    except Conflict as exc:
        log.info("scheduled %s of %s skipped: %s", kind, datastack, exc)
        return None
