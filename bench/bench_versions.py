"""Benchmark: versions in the version store against today's full-copy build, in one run.

On one synthetic table (``rows`` synapses, a graph with edits over its span):

* **baseline**: today's full copy of version 1 -- ``CREATE TABLE … AS SELECT`` of live ⋈
  segmentation at T_1 plus the full-copy indexes (bbox GiST per point, root ids, unique id),
  then ANALYZE; and the first version built into the store by the ``materialize`` workflow
  (a full build, its indexes included). The *smaller* of the two is the full-copy build time
  the incremental builds are compared with (the conservative choice);
* **ours**: versions 2 … ``versions`` built by the ``complete`` workflow, each at the first
  edit time at which ``change`` (default 1%) of the roots valid at the previous version's T
  have expired (update-roots and the store's merge both follow the change), while a child
  process inserts an annotation every 50 ms (max latency reported); then one more build with
  0 changes;
* disk: ``pg_total_relation_size`` of the store holding every version vs one full copy;
* queries (same SQL as the query layer's: ``ORDER BY id``): one-root p50 and bbox p50 on the
  oldest and newest version vs a full copy of the same version (the newest exported with
  ``export-schema``), and streaming a whole version (binary COPY) vs its full copy.

Usage: ``python -m bench.bench_versions --rows 1M [--versions 30] [--json]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from bench import (
    DATASTACK,
    TABLE,
    add_datastack,
    checkpoint,
    dataset,
    human,
    open_engine,
    parse_rows,
    result_row,
    run_workflow,
    scratch_database,
    upload_params,
    volume_for,
)

BUILD_RATIO_TARGET = 0.05
ZERO_CHANGE_TARGET_S = 1.0
DISK_RATIO_TARGET = 2.0
ROOT_QUERY_TARGET = 1.2
BBOX_TARGET = 1.5
STREAM_TARGET = 1.5
INSERT_TARGET_MS = 100


# steps of a complete run: the version's own, and the sync both layouts need first
VERSION_STEPS = ("prepare", "merge:", "index:", "upload_warnings", "publish")
SYNC_STEPS = ("ingest:", "update_roots:")


def _step_seconds(steps: list[dict[str, Any]], prefixes: tuple[str, ...]) -> float:
    return sum(s["total"] for s in steps if s["step"].startswith(prefixes))


def _load() -> list[float]:
    """Other work on the machine skews latencies: say how much there was."""
    import os

    return [round(v, 1) for v in os.getloadavg()]


def _timed(conn, sql: str, params: dict | None = None) -> float:
    t = time.perf_counter()
    conn.execute(sql, params).fetchall()
    return time.perf_counter() - t


def _full_copy(engine, table, when: datetime, target: str) -> float:
    """Today's full-copy build of one version table: merge, indexes, ANALYZE."""
    from matengine import version_store as store

    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        conn.execute(text("CREATE SCHEMA IF NOT EXISTS bench_full"))
        conn.execute(
            text(f"CREATE TABLE {target} AS {store.merged_select(table, 'true')}"),
            {"t": when},
        )
        for ddl in store.full_copy_indexes(table.schema, TABLE, target):
            conn.execute(text(ddl))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ANALYZE {target}"))
    return time.perf_counter() - t


def _size(engine, relation: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT pg_total_relation_size(CAST(:r AS regclass))"), {"r": relation}
            ).scalar_one()
        )


def _next_time(graph, start: datetime, edit_times: list[datetime], change: float):
    from bench.bench_sync import fraction_times

    later = [t for t in edit_times if t > start]
    if not later:
        return None
    when, actual, expired = fraction_times(graph, start, later, [change])[change]
    return when, actual, expired


def _query_stats(url: str, pairs: dict[str, tuple[str, str]], roots: dict[str, list[int]], boxes) -> dict:
    """p50 of one-root and bbox queries and the time to stream everything, per relation pair
    (ours, full copy), alternating the two so that cache and load affect both alike."""
    import psycopg

    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for label, (ours, full) in pairs.items():
            root_sql = "SELECT * FROM {} WHERE pre_pt_root_id = %(r)s ORDER BY id"
            box_sql = (
                "SELECT * FROM {} WHERE point(pre_pt_position_x, pre_pt_position_y) <@ "
                "box(point(%(x0)s, %(y0)s), point(%(x1)s, %(y1)s)) ORDER BY id"
            )
            times: dict[str, list[float]] = {
                k: [] for k in ("root_ours", "root_full", "box_ours", "box_full")
            }
            # one untimed pass of every query over both, so neither is measured cold
            for r in roots[label]:
                _timed(conn, root_sql.format(ours), {"r": r})
                _timed(conn, root_sql.format(full), {"r": r})
            for b in boxes:
                _timed(conn, box_sql.format(ours), b)
                _timed(conn, box_sql.format(full), b)
            for r in roots[label]:
                times["root_ours"].append(_timed(conn, root_sql.format(ours), {"r": r}))
                times["root_full"].append(_timed(conn, root_sql.format(full), {"r": r}))
            for b in boxes:
                times["box_ours"].append(_timed(conn, box_sql.format(ours), b))
                times["box_full"].append(_timed(conn, box_sql.format(full), b))
            stream = {}
            for name, rel in (("ours", ours), ("full", full), ("ours2", ours), ("full2", full)):
                t = time.perf_counter()
                n = 0
                with (
                    conn.cursor() as cur,
                    cur.copy(f"COPY (SELECT * FROM {rel} ORDER BY id) TO STDOUT (FORMAT binary)") as copy,
                ):
                    for block in copy:
                        n += len(block)
                stream[name] = time.perf_counter() - t
            out[label] = {
                **{k: round(statistics.median(v) * 1000, 3) for k, v in times.items()},
                "stream_ours_s": round(min(stream["ours"], stream["ours2"]), 3),
                "stream_full_s": round(min(stream["full"], stream["full2"]), 3),
            }
    return out


def run(
    rows: int | str = 1_000_000,
    *,
    workdir: str | Path | None = None,
    info=None,
    versions: int = 30,
    change: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    from bench.bench_materialize import InsertProbe
    from matengine import catalog
    from matengine import version_store as store
    from matengine.segmentation import open_segmentation

    rows = parse_rows(rows)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench_ver_") as tmp:
        if info is None:  # enough edits for ~40% of the roots to expire: 30+ versions at 1%
            info = dataset(Path(tmp) / "ds", rows, seed=seed, edits=2 * volume_for(rows)["edits"])
        graph = open_segmentation(info.graph_url).roots
        edit_times = sorted(info.edit_timestamps)
        with scratch_database("ver") as url:
            engine = open_engine(url)
            add_datastack(engine, info)
            run_workflow(engine, "bulk_upload", upload_params(info), table=TABLE)
            table = catalog.get_table(engine, DATASTACK, TABLE)
            t1 = table.roots_last_updated
            checkpoint(engine)
            full_s = _full_copy(engine, table, t1, "bench_full.v1")
            checkpoint(engine)
            first = run_workflow(engine, "materialize", {"tables": [TABLE], "timestamp": t1.isoformat()})
            baseline_s = min(full_s, first["seconds"])
            full_size = _size(engine, "bench_full.v1")
            builds: list[dict[str, Any]] = []
            when = t1
            checkpoint(engine)
            with InsertProbe(url, 0.05) as probe:
                for _ in range(versions - 1):
                    nxt = _next_time(graph, when, edit_times, change)
                    if nxt is None:
                        break
                    when, actual, expired = nxt
                    params = {"tables": [TABLE], "timestamp": when.isoformat()}
                    built = run_workflow(engine, "complete", params)
                    builds.append(
                        {
                            "version": built["result"]["version"],
                            "seconds": built["seconds"],
                            "roots_changed_fraction": actual,
                            "expired_roots": expired,
                            "merge": built["result"][f"merge:{TABLE}"],
                            "steps": built["steps"],
                        }
                    )
            # a build that ingests the probe's last inserts, then the one with nothing to do
            run_workflow(engine, "complete", {"tables": [TABLE], "timestamp": when.isoformat()})
            zero = run_workflow(engine, "complete", {"tables": [TABLE], "timestamp": when.isoformat()})
            newest = zero["result"]["version"]
            store_size = _size(engine, store.store_q(DATASTACK, TABLE))
            from matengine.versions import export_version

            export_version(engine, DATASTACK, newest, "bench_full_newest")
            rng = np.random.default_rng(seed)
            pairs = {
                "oldest": (store.version_relation(DATASTACK, 1, TABLE), "bench_full.v1"),
                "newest": (store.version_relation(DATASTACK, newest, TABLE), f"bench_full_newest.{TABLE}"),
            }
            roots, boxes = {}, []
            with engine.connect() as conn:
                for label, (_, full) in pairs.items():
                    pool = (
                        conn.execute(
                            text(
                                f"SELECT pre_pt_root_id FROM {full} TABLESAMPLE SYSTEM (1) "
                                "WHERE pre_pt_root_id <> 0"
                            )
                        )
                        .scalars()
                        .all()
                    )
                    roots[label] = [int(r) for r in rng.choice(pool, size=min(100, len(pool)), replace=False)]
                x0, x1, y0, y1 = conn.execute(
                    text(
                        "SELECT min(pre_pt_position_x), max(pre_pt_position_x), min(pre_pt_position_y), "
                        "max(pre_pt_position_y) FROM bench_full.v1"
                    )
                ).one()
            wx, wy = (x1 - x0) * 0.05, (y1 - y0) * 0.05
            for _ in range(30):
                bx, by = rng.uniform(x0, x1 - wx), rng.uniform(y0, y1 - wy)
                boxes.append({"x0": bx, "y0": by, "x1": bx + wx, "y1": by + wy})
            queries = _query_stats(url, pairs, roots, boxes)
            probe_summary = probe.result
    if not builds:
        raise RuntimeError("the dataset's edits gave no version after the first")
    secs = [b["seconds"] for b in builds]
    med = statistics.median(secs)
    n_versions = 3 + len(builds)
    fractions = [b["roots_changed_fraction"] for b in builds]
    written = [b["merge"]["written"] for b in builds]
    # the version's own writes (merge, index, publish) against the full copy's (merge,
    # indexes): both start from a segmentation table whose roots are valid at T, which the
    # sync steps (ingest, update-roots) bring about for either layout, or the live schedule
    # keeps between versions
    writes = [_step_seconds(b["steps"], VERSION_STEPS) for b in builds]
    syncs = [_step_seconds(b["steps"], SYNC_STEPS) for b in builds]
    med_w, med_sync = statistics.median(writes), statistics.median(syncs)
    out_rows = [
        result_row(
            f"version N+1 written (its prepare, merge, publish steps), "
            f"{statistics.median(fractions) * 100:.2g}% roots changed, {human(rows)} rows "
            f"(median of {len(builds)})",
            round(med_w, 3),
            baseline_s,
            "s",
            ratio_value=round(med_w / baseline_s, 4),
            target=f"<= {BUILD_RATIO_TARGET * 100:.0f}% of full copy",
            met=med_w / baseline_s <= BUILD_RATIO_TARGET,
            note=f"max {round(max(writes), 3)} s; "
            f"rows written per build median {int(statistics.median(written))}; "
            f"baseline = min(full copy {round(full_s, 2)} s, first store build {first['seconds']} s)",
        ),
        result_row(
            f"complete run of N+1 (sync to T + version), vs sync to T + full copy, {human(rows)} rows",
            med,
            round(med_sync + baseline_s, 3),
            "s",
            ratio_value=round(med / (med_sync + baseline_s), 4),
            note=f"sync steps (ingest, update-roots) median {round(med_sync, 3)} s of it; "
            f"max run {max(secs)} s",
        ),
        result_row(
            f"version N+1, 0 changes (no edits, no writes), {human(rows)} rows",
            zero["seconds"],
            baseline_s,
            "s",
            ratio_value=round(zero["seconds"] / baseline_s, 4),
            target=f"< {ZERO_CHANGE_TARGET_S:g} s",
            met=zero["seconds"] < ZERO_CHANGE_TARGET_S,
        ),
        result_row(
            f"disk, {n_versions} versions retained (pg_total_relation_size)",
            round(store_size / 2**20, 1),
            round(full_size / 2**20, 1),
            "MiB",
            ratio_value=round(store_size / full_size, 3),
            target=f"<= {DISK_RATIO_TARGET:g}x one full copy",
            met=store_size / full_size <= DISK_RATIO_TARGET,
            note=f"full copies of all would be ~{round(full_size * n_versions / 2**30, 2)} GiB",
        ),
    ]
    for label in ("oldest", "newest"):
        q = queries[label]
        out_rows += [
            result_row(
                f"one-root query p50, {label} version",
                q["root_ours"],
                q["root_full"],
                "ms",
                ratio_value=round(q["root_ours"] / q["root_full"], 3),
                target=f"<= {ROOT_QUERY_TARGET}x full copy",
                met=q["root_ours"] <= ROOT_QUERY_TARGET * q["root_full"],
            ),
            result_row(
                f"bbox query p50 (5% x 5% box), {label} version",
                q["box_ours"],
                q["box_full"],
                "ms",
                ratio_value=round(q["box_ours"] / q["box_full"], 3),
                target=f"<= {BBOX_TARGET}x full copy",
                met=q["box_ours"] <= BBOX_TARGET * q["box_full"],
            ),
            result_row(
                f"stream whole {label} version",
                q["stream_ours_s"],
                q["stream_full_s"],
                "s",
                ratio_value=round(q["stream_ours_s"] / q["stream_full_s"], 3),
                target=f"<= {STREAM_TARGET}x full copy",
                met=q["stream_ours_s"] <= STREAM_TARGET * q["stream_full_s"],
            ),
        ]
    if probe_summary.get("inserts"):
        out_rows.append(
            result_row(
                f"live insert latency during {len(builds)} builds (max)",
                probe_summary["max_ms"],
                None,
                "ms",
                target=f"< {INSERT_TARGET_MS} ms",
                met=probe_summary["max_ms"] < INSERT_TARGET_MS,
                note=f"{probe_summary['inserts']} inserts, p99 {probe_summary['p99_ms']} ms; "
                f"load average at the end {_load()}",
            )
        )
    return {
        "benchmark": "versions",
        "rows": out_rows,
        "n_rows": rows,
        "full_copy_s": round(full_s, 3),
        "first_store_build": first,
        "builds": builds,
        "zero_change": zero,
        "store_bytes": store_size,
        "full_copy_bytes": full_size,
        "queries": queries,
        "insert_probe": probe_summary,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1M")
    p.add_argument("--versions", type=int, default=30)
    p.add_argument("--change", type=float, default=0.01)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.rows, versions=args.versions, change=args.change)
    from bench.report import show

    show(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
