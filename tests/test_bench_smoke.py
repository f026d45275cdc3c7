"""``matengine bench`` at a tiny scale: it runs, prints the ratio table and writes its JSON.

The benchmarks themselves are not timed tests; this only proves the command works end to end
(scratch databases created and dropped, every benchmark beside its baseline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

ADMIN_URL = os.environ.get("MATENGINE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[1]
MINE = ("upload", "sync", "materialize")
FIELDS = {"operation", "ours", "baseline", "unit", "ratio", "target", "met", "note"}


def _bench_databases() -> set[str]:
    """Scratch databases of the benchmarks run here (others may run their own meanwhile)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    return {
        n
        for n in names
        if n.startswith(("matengine_bench_upload_", "matengine_bench_sync_", "matengine_bench_mat_"))
    }


@pytest.mark.timeout(180)
def test_bench_command_prints_table_and_writes_json(tmp_path):
    before = _bench_databases()
    out = tmp_path / "bench.json"
    env = dict(os.environ, MATENGINE_BENCH_ADMIN_URL=ADMIN_URL)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "matengine",
            "bench",
            "--rows",
            "20k",
            "--only",
            ",".join(MINE),
            "--json",
            str(out),
            "--workdir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    # (five insert probes start a child process each: ~2 s apiece on a loaded machine)
    assert elapsed < 90, f"bench at 20k rows took {elapsed:.0f} s"

    # the table: one header, one line per result
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("operation"))
    for col in ("ours", "baseline", "unit", "ratio", "target", "met?"):
        assert col in lines[header]
    report = json.loads(out.read_text())
    body = "\n".join(lines[header:])
    for row in report["table"]:
        assert row["operation"] in body

    # the JSON: every benchmark's rows, in one shape, with its details
    assert report["rows"] == 20_000
    assert report["errors"] == {}
    assert set(report["benchmarks"]) == set(MINE)
    ops = " | ".join(r["operation"] for r in report["table"])
    for needle in (
        "raw COPY",
        "executemany",
        "peak RSS",
        "ingest",
        "update roots, 0 edits",
        "live insert latency during upload",
        "live insert latency during ingest",
        "live insert latency during update-roots",
        "full re-lookup",
        "materialize",
        "template copy",
    ):
        assert needle in ops
    for row in report["table"]:
        assert set(row) == FIELDS
        assert row["met"] in (True, False, None)
        assert row["ours"] is not None
    compared = [r for r in report["table"] if r["baseline"] is not None]
    assert all(r["ratio"] is not None for r in compared)
    assert report["benchmarks"]["sync"]["ingest"]["agrees"] is True
    assert all(c["agrees"] for c in report["benchmarks"]["sync"]["update_roots"]["cases"] if "agrees" in c)
    steps = report["benchmarks"]["materialize"]["ours"]["steps"]
    assert {s["step"] for s in steps} >= {"prepare", "merge:synapses", "publish"}

    # scratch databases are gone
    assert _bench_databases() <= before


def test_bench_rows_and_names_are_checked():
    proc = subprocess.run(
        [sys.executable, "-m", "matengine", "bench", "--rows", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "row count" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "matengine", "bench", "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "unknown benchmark" in proc.stderr


def test_report_includes_every_benchmark_present():
    sys.path.insert(0, str(REPO))
    try:
        from bench import parse_rows
        from bench.report import BENCHMARKS, _available
    finally:
        sys.path.remove(str(REPO))
    assert parse_rows("20k") == 20_000 and parse_rows("1M") == 1_000_000
    assert parse_rows("2.5M") == 2_500_000 and parse_rows(3000) == 3000
    for name in BENCHMARKS:
        assert _available(name) == (REPO / "bench" / f"bench_{name}.py").exists()


@pytest.mark.timeout(120)
def test_writeback_bench_compares_paced_and_stock_index_builds(monkeypatch):
    """``bench_writeback`` at 20k rows: both sides ran, each with its inserts, and the paced
    side was really paced (the test server's data folder is on this machine)."""
    monkeypatch.setenv("MATENGINE_BENCH_ADMIN_URL", ADMIN_URL)
    sys.path.insert(0, str(REPO))
    try:
        from bench import bench_writeback
    finally:
        sys.path.remove(str(REPO))
    result = bench_writeback.run(20_000, repeat=1)
    latency, build = result["rows"]
    assert set(latency) == FIELDS and set(build) == FIELDS
    assert latency["unit"] == "ms" and "nothing paced" not in latency["note"]
    for side in ("stock", "paced"):
        (got,) = result["runs"][side]
        assert got["inserts"] > 0 and got["max_ms"] > 0 and got["seconds"] > 0
