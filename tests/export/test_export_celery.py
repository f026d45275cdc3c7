"""An export on real Celery workers (Redis broker): chunks in worker processes, the same files
and manifest as the in-process export."""

from __future__ import annotations

from pathlib import Path

from workflows.workers import BROKERS, Worker, broker_settings

from matengine.workflows.export import export_lock, export_parameters
from matengine.workflows.submit import submit, wait_for

from .helpers import export


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_on_celery_workers_equals_the_inline_export(engine, database_url, versioned, tmp_path):
    ds, _ = versioned
    export(engine, ds, f"file://{tmp_path}/inline", chunk_rows=500)
    with broker_settings(database_url, BROKERS["redis"]) as env:
        worker = Worker(env)
        try:
            params = export_parameters(engine, ds, 1, to=f"file://{tmp_path}/celery", chunk_rows=500)
            run_id = submit(engine, "export", params, datastack=ds, table=export_lock(1))
            run = wait_for(engine, run_id, timeout=120)
        finally:
            worker.stop()
    assert run.state == "SUCCESS", run.errors
    assert run.chunks_done == run.chunks_total > 6
    assert _files(tmp_path / "celery") == _files(tmp_path / "inline")
