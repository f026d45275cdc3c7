"""Versions made for a past T, honest about their rows.

A bulk upload without ``--created`` stamps its rows with the upload's own time. A version at
an earlier T (``complete --timestamp T``) then holds none of them — correct by the time rule,
and almost never what the operator meant. This step of ``materialize``/``complete`` finds
such uploads and puts a warning in the run result, which the CLI prints::

    table 'synapses': 0 of 3,404 rows exist at 2024-05-01T00:00:00+00:00; its bulk upload
    (run 7) had no --created, so its rows are stamped 2026-12-01T21:00:00+00:00; upload with
    --created 2024-05-01T00:00:00+00:00 (or earlier) to have them in versions before then
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from matengine import catalog
from matengine.db import metadata as m
from matengine.timeutil import to_utc
from matengine.workflows.engine import Step, StepContext


def upload_warnings(engine: Engine, datastack: str, tables: list[str], at: datetime) -> list[str]:
    runs = m.workflow_runs
    out = []
    with engine.connect() as conn:
        for name in tables:
            upload = conn.execute(
                select(runs.c.id, runs.c.finished)
                .where(
                    runs.c.kind == "bulk_upload",
                    runs.c.state == "SUCCESS",
                    runs.c.datastack == datastack,
                    runs.c.table_name == name,
                    runs.c.parameters["created"].astext.is_(None),
                    runs.c.finished > at,
                )
                .order_by(runs.c.finished.desc())
                .limit(1)
            ).first()
            if upload is None:
                continue
            total, alive = _counts(conn, datastack, name, at)
            if alive < total:
                out.append(
                    f"table {name!r}: {alive:,} of {total:,} rows exist at {at.isoformat()}; its bulk "
                    f"upload (run {upload.id}) had no --created, so its rows are stamped with the "
                    f"upload time; upload with --created {at.isoformat()} (or earlier) to have them "
                    "in versions before then"
                )
    return out


def _counts(conn: Connection, datastack: str, name: str, at: datetime) -> tuple[int, int]:
    table = catalog.get_table(conn, datastack, name)
    row = conn.execute(
        text(
            "SELECT count(*) AS total, count(*) FILTER (WHERE created <= :t AND "
            f"(deleted IS NULL OR deleted > :t)) AS alive FROM {table.names.live_q}"
        ),
        {"t": at},
    ).one()
    return int(row.total), int(row.alive)


class UploadWarningsStep(Step):
    """No chunks: at its finish, the warnings of :func:`upload_warnings` go to the result."""

    key = "upload_warnings"

    def __init__(self, datastack: str, tables: list[str], timestamp: str):
        self.datastack, self.tables, self.timestamp = datastack, tables, timestamp

    def plan(self, ctx: StepContext) -> list[Any]:
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        warnings = upload_warnings(ctx.engine, self.datastack, self.tables, to_utc(self.timestamp))
        return {"warnings": warnings} if warnings else {}
