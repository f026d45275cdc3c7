"""Benchmark: point -> supervoxel -> root lookups, against their baselines in the same run.

* supervoxel lookup grouped by chunk (one cutout per chunk) vs one cutout per point
  (the baseline runs on a subsample; both rates are points/s, their ratio is reported);
* root lookup (``get_roots``) in-process on the local edit-log graph, and over HTTP
  through the graphene client talking to the PCG-compatible server (real uvicorn).

Usage: ``python bench/bench_lookup.py --points 1000000 [--json]`` or ``run(points, seed)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from matengine.segmentation import open_segmentation
from matengine.segmentation.cloudvolume_lookup import lookup_one_cutout_per_point
from matengine.segmentation.graphene import GrapheneClient
from matengine.segmentation.serving import ThreadedServer, pcg_app
from matengine.synth.generate import generate_dataset

VOLUME = (512, 512, 128)  # 8 x 8 x 2 chunks of 64^3
BASELINE_POINTS = 2000


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def run(
    points: int = 1_000_000,
    seed: int = 0,
    workdir: str | Path | None = None,
    supervoxels: int = 50_000,
    edits: int = 5_000,
    size: tuple[int, int, int] = VOLUME,
) -> dict:
    """Measure everything once; returns a flat dict of rates (per second) and ratios."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t = time.perf_counter()
        info = generate_dataset(
            Path(tmp) / "ds", size=size, supervoxels=supervoxels, edits=edits, synapses=0, cells=0, seed=seed
        )
        setup_s = time.perf_counter() - t
        seg = open_segmentation(info.graph_url)
        rng = np.random.default_rng(seed)
        ann_res = np.asarray(info.annotation_resolution)
        lo = np.asarray(info.voxel_offset) * np.asarray(info.segmentation_resolution) / ann_res
        hi = lo + np.asarray(info.size) * np.asarray(info.segmentation_resolution) / ann_res
        pts = rng.uniform(lo, hi, size=(points, 3)).astype(np.float64)

        src = seg.supervoxels
        t = time.perf_counter()
        fast = src.lookup(pts, ann_res)
        fast_s = time.perf_counter() - t

        sub = pts[:BASELINE_POINTS]
        t = time.perf_counter()
        slow = lookup_one_cutout_per_point(src, sub, ann_res)
        slow_s = time.perf_counter() - t
        agree = bool(np.array_equal(slow.supervoxel_ids, fast.supervoxel_ids[: len(sub)]))

        svids = fast.supervoxel_ids
        when = info.edit_timestamps[len(info.edit_timestamps) // 2] + timedelta(seconds=1)
        t = time.perf_counter()
        roots = seg.roots.get_roots(svids, when)  # first call at this T builds a snapshot
        local_cold_s = time.perf_counter() - t
        t = time.perf_counter()
        seg.roots.get_roots(svids, when)
        local_warm_s = time.perf_counter() - t

        tables = {seg.name: seg}
        with ThreadedServer(pcg_app(tables.__getitem__)) as srv:
            client = GrapheneClient(srv.url, seg.name)
            client.get_roots(svids[:10], when)  # connection warm-up
            t = time.perf_counter()
            http_roots = client.get_roots(svids, when)
            http_s = time.perf_counter() - t
            client.close()
        http_agree = bool(np.array_equal(http_roots, roots))

    fast_rate, slow_rate = _rate(points, fast_s), _rate(len(sub), slow_s)
    return {
        "points": points,
        "chunks_read": fast.chunks_read,
        # get_roots de-duplicates ids before looking them up (and before any request).
        "unique_supervoxels": int(len(np.unique(fast.supervoxel_ids))),
        "outside": fast.outside,
        "label0": fast.label0,
        "setup_seconds": round(setup_s, 2),
        "lookup_chunked_points_per_s": fast_rate,
        "lookup_per_point_points_per_s": slow_rate,
        "lookup_speedup": round(fast_rate / slow_rate, 1),
        "baseline_points": len(sub),
        "baseline_agrees": agree,
        "get_roots_inprocess_ids_per_s_cold": _rate(points, local_cold_s),
        "get_roots_inprocess_ids_per_s": _rate(points, local_warm_s),
        "get_roots_http_ids_per_s": _rate(points, http_s),
        "http_agrees": http_agree,
        "ingest_points_per_s": _rate(points, fast_s + local_cold_s),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)
    result = run(args.points, args.seed)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    ok = result["baseline_agrees"] and result["http_agrees"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
