"""Annotations usable the moment they are posted: caveclient ``post_annotation`` then
``live_live_query``, against the operator flow (post, then an ingest run, then query).

Two measures, each beside its baseline on the same rows:

- 100 rows: latency from the start of ``post_annotation`` to the end of a ``live_live_query``
  that returns them with their roots (median of several rounds); the baseline writes the same
  rows without the in-request lookup and runs an ingest of the table before querying.
- 100k rows: time from the first of ten 10k-row posts until a live query returns all of them
  with roots; the baseline posts the same way without lookups, then ingests.

Every answer is checked against the oracle (supervoxels and roots at query time).

``python -m bench.bench_post_live [--rows 100k] [--json]``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bench import dataset, open_engine, parse_rows, run_workflow, scratch_database

BATCH = 10_000


def _rows(base: dict[str, np.ndarray], idx: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "pre_pt": {"position": base["pre_pt_position"][i].tolist()},
            "ctr_pt": {"position": base["ctr_pt_position"][i].tolist()},
            "post_pt": {"position": base["post_pt_position"][i].tolist()},
            "size": float(base["size"][i]),
        }
        for i in idx
    ]


def _exact(df, oracle, res, t: datetime, n: int) -> bool:
    if len(df) != n:
        print(f"expected {n} rows, got {len(df)}", file=sys.stderr)
        return False
    for pt in ("pre_pt", "post_pt"):
        pos = np.stack(df[f"{pt}_position"].to_numpy()).astype(float)
        sv = oracle.supervoxels_at(pos, res)
        roots = np.asarray(oracle.roots_at(sv, t), np.uint64).astype(np.int64)
        if not (df[f"{pt}_root_id"].to_numpy() == roots).all():
            print(f"{pt}: {(df[f'{pt}_root_id'].to_numpy() != roots).sum()} roots differ", file=sys.stderr)
            return False
    return True


def run(rows: int, rounds: int = 5) -> dict[str, Any]:
    from caveclient import CAVEclient

    from matengine import annotations as ann
    from matengine import auth, catalog
    from matengine.api.app import create_app
    from matengine.config import configure, get_settings
    from matengine.segmentation.serving import ThreadedServer
    from matengine.synth.oracle import Oracle
    from matengine.workflows.submit import sync_parameters

    logging.getLogger("caveclient").setLevel(logging.ERROR)

    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory() as tmp, scratch_database("post_live") as url:
        configure(database_url=url)
        engine = open_engine(url)
        info = dataset(tmp, max(rows, 1000))
        oracle = Oracle(info.directory)
        base = oracle.base_rows("synapses")
        res = info.annotation_resolution
        ds = "bench_post"
        catalog.add_datastack(engine, ds, segmentation_source=info.graph_url, voxel_resolution=res)
        token = auth.create_token(engine, ds, "admin", "bench", user="bench")[1]
        with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
            client = CAVEclient(ds, server_address=srv.url, auth_token=token, write_server_cache=False)
            annotation, live = client.annotation, client.materialize.live_live_query
            for name in ("posted", "baseline", "bulk", "bulk_baseline"):
                annotation.create_table(
                    name, "synapse", name, voxel_resolution=list(res), write_permission="PUBLIC"
                )
            # caveclient's live queries need a version
            run_workflow(engine, "complete", sync_parameters(engine, "complete", ds), datastack=ds)

            def ingest(table: str) -> None:
                params = sync_parameters(engine, "ingest", ds, table=table)
                run_workflow(engine, "ingest", params, datastack=ds, table=table)

            ours, theirs, posts, exact = [], [], [], True
            for r in range(rounds):
                idx = np.arange(r * 100, (r + 1) * 100)
                t0 = time.perf_counter()
                ids = annotation.post_annotation("posted", _rows(base, idx))
                posts.append(time.perf_counter() - t0)
                t = datetime.now(UTC)
                df = live("posted", t, filter_in_dict={"posted": {"id": ids}})
                ours.append(time.perf_counter() - t0)
                exact &= _exact(df, oracle, res, t, 100)
                t0 = time.perf_counter()
                ids = ann.insert_annotations(engine, ds, "baseline", _rows(base, idx))  # the old post
                ingest("baseline")
                t = datetime.now(UTC)
                df = live("baseline", t, filter_in_dict={"baseline": {"id": ids}})
                theirs.append(time.perf_counter() - t0)
                exact &= _exact(df, oracle, res, t, 100)
            out["post_100_then_live_query_ms"] = round(1000 * statistics.median(ours), 1)
            out["of_which_post_100_ms"] = round(1000 * statistics.median(posts), 1)
            out["baseline_post_ingest_query_ms"] = round(1000 * statistics.median(theirs), 1)

            idx = np.arange(rows) % len(base["id"])
            t0 = time.perf_counter()
            for start in range(0, rows, BATCH):
                annotation.post_annotation("bulk", _rows(base, idx[start : start + BATCH]))
            out["of_which_posts_s"] = round(time.perf_counter() - t0, 2)
            t = datetime.now(UTC)
            df = live("bulk", t)
            out["post_bulk_until_queryable_s"] = round(time.perf_counter() - t0, 2)
            exact &= _exact(df, oracle, res, t, rows)
            t0 = time.perf_counter()
            for start in range(0, rows, BATCH):
                ann.insert_annotations(engine, ds, "bulk_baseline", _rows(base, idx[start : start + BATCH]))
            ingest("bulk_baseline")
            t = datetime.now(UTC)
            df = live("bulk_baseline", t)
            out["baseline_bulk_until_queryable_s"] = round(time.perf_counter() - t0, 2)
            exact &= _exact(df, oracle, res, t, rows)
        out["exact"] = bool(exact)
        engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="100k", help="rows of the bulk measure (default 100k)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)
    result = run(parse_rows(args.rows), args.rounds)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
