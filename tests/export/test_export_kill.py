"""A SIGKILL mid export, then resume: the same files and manifest as an uninterrupted export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from matengine.workflows import runs
from matengine.workflows.engine import execute_inline

from .helpers import export

CHUNK_ROWS = 20


def _files(root: Path) -> dict[str, bytes]:
    """Every file but the Delta commit (its commitInfo holds delta-rs's clock)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_delta_log" not in p.parts
    }


def _export_run_after(engine, datastack: str, earlier: int) -> runs.Run | None:
    found = [r for r in runs.list_runs(engine, datastack) if r.kind == "export" and r.id > earlier]
    return found[0] if found else None


def test_sigkill_mid_export_then_resume_equals_an_uninterrupted_export(engine, versioned, tmp_path):
    ds, _ = versioned
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # small chunks (~150 for 3,000 rows), so that the kill after 3 of them lands mid-step even
    # when the machine is loaded and the polling below is slow
    first = export(engine, ds, f"file://{whole}", fmt="delta", chunk_rows=CHUNK_ROWS)

    cmd = [sys.executable, "-m", "matengine", "export", ds, "--version", "1", "--format", "delta"]
    cmd += ["--to", f"file://{killed}", "--chunk-rows", str(CHUNK_ROWS), "--json"]
    log = tmp_path / "export.log"  # a file, not a pipe nobody drains (a full pipe blocks the CLI)
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    run = None
    while time.monotonic() < deadline:
        run = _export_run_after(engine, ds, first.id)
        step = next((s for s in (run.steps if run else []) if s["key"] == "export:synapses"), None)
        if step and step["chunks_done"] >= 3:
            break
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = runs.get_run(engine, run.id)
    step = next(s for s in run.steps if s["key"] == "export:synapses")
    assert run.state == "RUNNING" and step["chunks_done"] < step["chunks_total"], "killed too late"

    resumed = execute_inline(engine, run.id)
    assert resumed.state == "SUCCESS", resumed.errors
    assert _files(killed) == _files(whole)
    for table in ("synapses", "cells"):
        a, b = DeltaTable(str(whole / table)), DeltaTable(str(killed / table))
        assert pa.table(a.get_add_actions(flatten=True)) == pa.table(b.get_add_actions(flatten=True))
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["tables"]["synapses"]["rows"] == resumed.result["export"]["rows"]["synapses"]
