"""Versions made for a past T are honest about their rows: an upload without --created whose
rows postdate T gets a warning in the run result and the CLI; `matengine synth` prints the
flags to use; errors name CLI flags."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from matengine import catalog
from matengine.cli import app
from matengine.cli.flags import as_cli_message
from matengine.synth.generate import generate_dataset
from matengine.workflows.submit import sync_parameters

from .helpers import run_inline


def _upload(engine, ds: str, folder, created: str | None) -> None:
    mapping = json.loads((folder / "column_mapping.json").read_text())
    mapping = {k: v for k, v in mapping.items() if "root" not in k}
    params = {
        "datastack": ds,
        "table": "synapses",
        "schema": "synapse",
        "source": f"file://{folder}",
        "column_mapping": mapping,
        "created": created,
    }
    run_inline(engine, "bulk_upload", params, datastack=ds, table="synapses")


def test_version_before_an_upload_without_created_warns(engine, tmp_path):
    info = generate_dataset(tmp_path / "d", synapses=120, cells=0, edits=5, seed=3)
    ds = "warn_ds"
    catalog.add_datastack(
        engine, ds, segmentation_source=info.graph_url, voxel_resolution=info.annotation_resolution
    )
    try:
        _upload(engine, ds, info.tables["synapses"], None)
        past = info.start + timedelta(days=1)
        params = sync_parameters(engine, "complete", ds, timestamp=past.isoformat(), days_to_expire=36500)
        run = run_inline(engine, "complete", params, datastack=ds)
        [warning] = run.result["warnings"]
        assert warning.startswith(f"table 'synapses': 0 of 120 rows exist at {past.isoformat()}")
        assert f"upload with --created {past.isoformat()} (or earlier)" in warning
        # a version after the upload holds every row: no warning
        params = sync_parameters(engine, "complete", ds, timestamp=datetime.now(UTC).isoformat())
        assert "warnings" not in run_inline(engine, "complete", params, datastack=ds).result
    finally:
        catalog.drop_datastack(engine, ds)


def test_upload_with_created_has_no_warning(engine, tmp_path):
    info = generate_dataset(tmp_path / "d", synapses=50, cells=0, edits=5, seed=4)
    ds = "warn_ok"
    catalog.add_datastack(
        engine, ds, segmentation_source=info.graph_url, voxel_resolution=info.annotation_resolution
    )
    try:
        _upload(engine, ds, info.tables["synapses"], info.start.isoformat())
        past = info.start + timedelta(days=1)
        params = sync_parameters(engine, "complete", ds, timestamp=past.isoformat(), days_to_expire=36500)
        assert "warnings" not in run_inline(engine, "complete", params, datastack=ds).result
    finally:
        catalog.drop_datastack(engine, ds)


def test_synth_prints_the_upload_flags(tmp_path):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--synapses", "10", "--cells", "0"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "upload with:" in x)
    meta = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert f"--created {meta['time']['start']}" in line
    assert f"--roots-timestamp {meta['time']['initial']}" in line


def test_errors_name_cli_flags():
    assert as_cli_message("root ids are mapped: say when they were valid (roots_timestamp)") == (
        "root ids are mapped: say when they were valid (--roots-timestamp)"
    )
    assert (
        as_cli_message("field 'created': created 'x' is not a time")
        == "option --created: created 'x' is not a time"
    )
    assert as_cli_message("created 'x' is not a time") == "--created 'x' is not a time"
    assert (
        as_cli_message("chunk_rows must be a positive integer") == "--chunk-rows must be a positive integer"
    )
    assert as_cli_message("rows created after T") == "rows created after T"
