"""Smoke test of bench/bench_lookup.py on a tiny volume (the real numbers come from
running the script)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_lookup.py"


def test_bench_lookup_runs_and_agrees(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_lookup", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.run(points=3000, seed=1, workdir=tmp_path, supervoxels=300, edits=30, size=(130, 128, 40))
    assert out["baseline_agrees"] and out["http_agrees"]
    assert out["lookup_speedup"] > 1 and out["chunks_read"] == 6
