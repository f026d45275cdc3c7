"""The ``sync_live`` workflow: keep a datastack's live tables current without making a version.

Ingest (supervoxels and roots of rows still waiting) then update-roots (roots expired since
each table's ``roots_last_updated``) for every table, to the run's timestamp: the field's
hourly job. ``matengine schedule DS CRON --live`` runs it periodically; live queries then
correct fewer roots at query time.
"""

from __future__ import annotations

from matengine.workflows.engine import Step, workflow
from matengine.workflows.params import SyncParams, parameters_of
from matengine.workflows.runs import Run
from matengine.workflows.sync_steps import ingest_and_update_steps


@workflow("sync_live")
def _sync_live(run: Run) -> list[Step]:
    return ingest_and_update_steps(SyncParams.of(parameters_of(run)))
