"""``matengine demo``: the whole product once, on whatever database and broker are configured
(by default the embedded PostgreSQL and an in-process worker: no system services).

Synthetic dataset (a segmentation volume, an edit log over the last two days, synapse and
cell tables as .npy columns) → bulk upload → ingest → ``complete`` at a time in the middle of
the edits (version 1) → live inserts, updates, deletes → proofreading (merges and a split
appended to the graph's edit log, as ``do_merge`` / ``matengine graph merge`` do) → update
roots → ``complete`` now (version 2) → live queries between the versions and after the
edits; every result is checked row by row against the oracle (re-read after the edits).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from matengine import annotations as ann
from matengine import catalog
from matengine.config import configure, get_settings
from matengine.db.connection import get_engine, resolve_database_url
from matengine.db.identifiers import quote, version_schema
from matengine.errors import NotFound, PermanentError
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle
from matengine.synth.verify import columns_from_arrow, differences, read_columns
from matengine.timeutil import utcnow
from matengine.workflows.submit import submit, sync_parameters, wait_for

DATASTACK = "demo"
SIZES = {"small": 5_000, "medium": 200_000, "large": 1_000_000}
TABLES = {"synapses": "synapse", "cells": "cell_type_local"}


def _dataset(workdir: Path, synapses: int, seed: int):
    now = utcnow().replace(microsecond=0)
    return generate_dataset(
        workdir / "dataset",
        synapses=synapses,
        cells=max(100, synapses // 20),
        supervoxels=max(600, synapses // 10),
        edits=max(60, synapses // 100),
        seed=seed,
        start=now - timedelta(days=2),
        span=timedelta(days=1),
    )


def run_demo(
    size: str = "small", workdir: Path | None = None, log: Callable[[str], None] | None = None, seed: int = 0
) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    settings = get_settings()
    workdir = Path(workdir or settings.home / "demo")
    if workdir.resolve() != (Path(settings.home) / "demo").resolve():
        # uploads read only under the source roots; the demo's own folder is always one, a
        # --workdir elsewhere is added for this process (separate workers need it configured)
        configure(source_roots=",".join(r for r in (settings.source_roots, str(workdir)) if r))
        settings = get_settings()
    n = SIZES.get(size) or int(size)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def timed(label: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        timings[label] = round(time.perf_counter() - t0, 2)
        say(f"{label}: {timings[label]} s")
        return value

    url = resolve_database_url(settings)
    engine = get_engine(url)
    mode = "external" if settings.database_url else "embedded"
    say(f"database: {mode} ({url}); workers: {settings.broker_url or 'in-process (no broker configured)'}")
    info = timed("synthetic dataset", lambda: _dataset(workdir, n, seed))
    oracle = Oracle(info.directory)
    try:
        catalog.drop_datastack(engine, DATASTACK)
    except NotFound:
        pass
    catalog.add_datastack(
        engine,
        DATASTACK,
        segmentation_source=info.graph_url,
        voxel_resolution=info.annotation_resolution,
        description="matengine demo on a synthetic dataset",
    )

    def run(kind: str, params: dict[str, Any], table: str | None = None) -> Any:
        run_id = submit(engine, kind, params, datastack=DATASTACK, table=table)
        done = wait_for(engine, run_id)
        if done.state != "SUCCESS":
            raise PermanentError(f"{kind} run {run_id} {done.state}: {done.errors}")
        return done

    for table in TABLES:
        folder = info.directory / table
        mapping = json.loads((folder / "column_mapping.json").read_text())
        has_roots = any("root" in k for k in mapping)
        params = {
            "datastack": DATASTACK,
            "table": table,
            "schema": TABLES[table],
            "source": folder.as_uri(),
            "column_mapping": mapping,
            "roots_timestamp": info.initial_timestamp.isoformat() if has_roots else None,
            "created": info.start.isoformat(),
            "chunk_rows": settings.chunk_rows,
        }
        timed(f"upload {table}", functools.partial(run, "bulk_upload", params, table))
    timed(
        "ingest",
        lambda: run("ingest", sync_parameters(engine, "ingest", DATASTACK, timestamp=info.start.isoformat())),
    )

    t1 = info.start + (info.end - info.start) / 2
    v1 = timed(
        "complete (version 1)",
        lambda: run("complete", sync_parameters(engine, "complete", DATASTACK, timestamp=t1.isoformat())),
    ).result["version"]

    extra, deleted = _live_edits(engine, oracle)
    say(f"live edits: {len(extra)} rows inserted or updated, {len(deleted)} deleted")
    edits = timed("proofreading (3 merges, 1 split)", lambda: _proofread(info.graph_url))
    for e in edits:
        say(f"  {e.kind} {e.operation_id}: {list(e.old_root_ids)} -> {list(e.new_root_ids)}")
    oracle = Oracle(info.directory)  # the ground truth now includes the appended edits
    timed(
        "update roots",
        lambda: run("update_roots", sync_parameters(engine, "update_roots", DATASTACK)),
    )
    t2 = utcnow()
    v2 = timed(
        "complete (version 2)",
        lambda: run("complete", sync_parameters(engine, "complete", DATASTACK, timestamp=t2.isoformat())),
    ).result["version"]

    problems: list[str] = []
    rows: dict[str, int] = {}
    for version, when in ((v1, t1), (v2, t2)):
        for table, schema in TABLES.items():
            got = read_columns(engine, quote(version_schema(DATASTACK, version), table), schema)
            want = oracle.table_at(table, when, **_edits_for(table, extra, deleted))
            rows[f"v{version}.{table}"] = len(got["id"])
            problems += [f"version {version} {table}: {p}" for p in differences(got, want)]
    t_live = info.start + (info.end - info.start) * 3 / 4
    from matengine.query.engine import live_query

    got = timed(
        "live query",
        lambda: columns_from_arrow(
            live_query(engine, DATASTACK, "synapses", t_live, {}).to_table(), "synapse"
        ),
    )
    want = oracle.table_at("synapses", t_live, **_edits_for("synapses", extra, deleted))
    problems += [f"live query: {p}" for p in differences(got, want)]
    t_now = utcnow()
    got_now = columns_from_arrow(live_query(engine, DATASTACK, "synapses", t_now, {}).to_table(), "synapse")
    want = oracle.table_at("synapses", t_now, **_edits_for("synapses", extra, deleted))
    problems += [f"live query after the proofreading: {p}" for p in differences(got_now, want)]
    verified = not problems
    say(f"verified against oracle: {'yes' if verified else 'NO'}")
    for p in problems:
        say(f"  {p}")
    return {
        "database": mode,
        "workers": "celery" if settings.broker_url else "in-process",
        "datastack": DATASTACK,
        "synapses": n,
        "versions": [v1, v2],
        "proofreading": [
            {"operation_id": e.operation_id, "kind": e.kind, "new_root_ids": list(e.new_root_ids)}
            for e in edits
        ],
        "rows": rows,
        "live_query_rows": len(got["id"]),
        "timings_s": timings,
        "seconds": round(time.perf_counter() - t_all, 2),
        "verified": verified,
        "problems": problems,
    }


def _proofread(graph_url: str) -> list:
    """Three merges of the largest roots and a split of the result, appended now."""
    from matengine.segmentation.local_edits import Merge, Split, apply_edit
    from matengine.segmentation.local_graph import LocalGraph

    directory = Path(graph_url[len("local://") :])
    graph = LocalGraph(directory)
    roots = graph.get_roots(graph.supervoxel_ids, utcnow())
    values, counts = np.unique(roots, return_counts=True)
    biggest = values[np.argsort(-counts, kind="stable")[:4]]
    one_sv = [int(graph.supervoxel_ids[np.argmax(roots == r)]) for r in biggest]
    done = [apply_edit(directory, Merge(one_sv[0], sv)) for sv in one_sv[1:]]
    members = np.flatnonzero(np.isin(roots, biggest[:2]))  # first two merged roots' supervoxels
    moved = graph.supervoxel_ids[members[roots[members] == biggest[1]]]
    done.append(apply_edit(directory, Split(tuple(map(int, moved)), (one_sv[0],), done[-1].new_root_ids[0])))
    return done


def _live_edits(engine: Any, oracle: Oracle) -> tuple[list[dict], dict[int, Any]]:
    """Insert 50 synapses, update 10 and delete 20 file rows through the annotation API."""
    rng = np.random.default_rng(1)
    base = oracle.base_rows("synapses")
    picks = rng.choice(base["id"], size=30, replace=False).tolist()
    points = {k: base[k] for k in ("pre_pt_position", "ctr_pt_position", "post_pt_position")}
    new_rows = []
    for i in range(60):
        j = int(rng.integers(len(base["id"])))
        new_rows.append(
            {
                "pre_pt": {"position": points["pre_pt_position"][j].tolist()},
                "ctr_pt": {"position": points["ctr_pt_position"][j].tolist()},
                "post_pt": {"position": points["post_pt_position"][(j + i) % len(base["id"])].tolist()},
                "size": float(i),
            }
        )
    ids = ann.insert_annotations(engine, DATASTACK, "synapses", new_rows[:50])
    updates = [dict(r, id=old) for r, old in zip(new_rows[50:], picks[:10], strict=True)]
    mapping = ann.update_annotations(engine, DATASTACK, "synapses", updates)
    ann.delete_annotations(engine, DATASTACK, "synapses", picks[10:])
    rows = ann.get_annotations(engine, DATASTACK, "synapses", ids + list(mapping.values()) + picks)
    extra = [
        {
            "id": r["id"],
            "created": r["created"],
            "deleted": r["deleted"],
            "pre_pt_position": r["pre_pt_position"],
            "ctr_pt_position": r["ctr_pt_position"],
            "post_pt_position": r["post_pt_position"],
            "size": r["size"],
        }
        for r in rows
        if r["id"] not in set(picks)
    ]
    deleted = {r["id"]: r["deleted"] for r in rows if r["id"] in set(picks)}
    return extra, deleted


def _edits_for(table: str, extra: list[dict], deleted: dict[int, Any]) -> dict[str, Any]:
    return {"extra_rows": extra, "deleted": deleted} if table == "synapses" else {}
