"""Benchmark: materialize N rows as a version, beside the field's procedure, in one run.

* baseline (run first, on the freshly uploaded live database): the field's procedure --
  every connection to the live database closed, ``CREATE DATABASE copy TEMPLATE live``,
  then in the copy: drop what the version does not need, ``CREATE TABLE … AS SELECT … FROM
  live JOIN segmentation``, drop the originals, and the same indexes as our version table
  (primary key, root ids, a GiST per position) with ``maintenance_work_mem = 1GB`` as the
  field sets it. No ANALYZE (ours runs one), so the baseline is if anything flattered;
* ours: the ``materialize`` workflow at the table's root time (its ingest and update-roots
  steps find nothing to do), in-process, while another process inserts an annotation every
  ``probe_interval`` s into the live table through matengine's annotation API; the slowest
  of those inserts is reported (the field's procedure cannot take writes at all while the
  template copy runs).

Usage: ``python -m bench.bench_materialize --rows 1M [--json]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import (
    DATASTACK,
    TABLE,
    add_datastack,
    admin_connect,
    admin_url,
    checkpoint,
    database_url,
    dataset,
    human,
    open_engine,
    parse_rows,
    rate,
    release_engine,
    result_row,
    run_workflow,
    scratch_database,
    step_at,
    upload_params,
)

TIME_RATIO_TARGET = 0.6
RATE_TARGET = 200_000
INSERT_BLOCK_TARGET_MS = 100


# ---------------------------------------------------------------------------- baseline
def _field_merge_sql(table, target: str) -> str:
    """The field's ``merge_tables``: annotation columns except created/deleted/superceded_id,
    plus the segmentation columns, ``valid AND created <= T``, inner join."""
    from matengine.db.identifiers import quote

    cols = ["a.id", "a.valid"] + [f"a.{quote(c.name)}" for c in table.schema.annotation_columns()]
    seg = [f"s.{quote(c.name)}" for c in table.schema.segmentation_columns()]
    return (
        f"CREATE TABLE {target} AS SELECT {', '.join(cols + seg)} "
        f"FROM {table.names.live_q} a JOIN {table.names.segmentation_q} s ON a.id = s.id "
        "WHERE a.created <= %(t)s AND a.valid = true"
    )


def _index_ddl(table, target: str) -> list[str]:
    """The indexes our version table gets (see MergeStep.finish): the field builds the same
    set (primary key, root ids, a spatial index per position)."""
    from matengine.db.annotation_tables import point_index
    from matengine.db.identifiers import quote, validate_name

    t = table.table_name
    ddl = [f"ALTER TABLE {target} ADD PRIMARY KEY (id)"]
    for pt in table.schema.bound_points:
        name = validate_name(f"ix_{t}_{pt}_root_id"[:63])
        ddl.append(f"CREATE INDEX {quote(name)} ON {target} ({quote(pt + '_root_id')})")
    for f in table.schema.points:
        ddl.append(point_index(validate_name(f"ix_{t}_{f.name}_bbox"[:63]), target, f.name)[1])
    return ddl


def field_procedure(url: str, table, when, *, strategy: str | None = None) -> dict[str, Any]:
    """The field's frozen-database procedure, step by step (the field's documented procedure):
    close every session of the live database, ``CREATE DATABASE … TEMPLATE live``, drop the
    tables the version does not need, merge (``CREATE TABLE AS`` join), drop the originals,
    then add the indexes one by one with ``maintenance_work_mem = 1GB`` as the field does."""
    import psycopg
    from psycopg import sql

    from matengine.db.connection import libpq_url
    from matengine.db.identifiers import quote

    admin = admin_url()
    live_db = make_url(url).database
    copy_db = f"{live_db}_tpl"
    release_engine(url)  # the template copy needs the live database to itself
    with admin_connect(admin) as conn:
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (live_db,)
        ).fetchone()[0]
        if others:
            raise RuntimeError(f"{others} connection(s) still open to {live_db}")
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(copy_db), sql.Identifier(live_db)
        )
        if strategy:
            stmt = stmt + sql.SQL(" STRATEGY {}").format(sql.Identifier(strategy))
        conn.execute(stmt)
    copy_s = time.perf_counter() - t0
    steps: dict[str, float] = {"template_copy": copy_s}
    try:
        with psycopg.connect(libpq_url(database_url(admin, copy_db)), autocommit=True) as conn:

            def timed(name: str, statement: str, params: dict | None = None) -> Any:
                t = time.perf_counter()
                cur = conn.execute(statement, params)
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - t
                return cur

            timed("drop_tables", "DROP SCHEMA matengine CASCADE")
            temp = quote(table.datastack, f"temp__{table.table_name}")
            merged_rows = timed("merge", _field_merge_sql(table, temp), {"t": when}).rowcount
            timed("merge", f"DROP TABLE {table.names.live_q}, {table.names.segmentation_q} CASCADE")
            timed("merge", f"ALTER TABLE {temp} RENAME TO {quote(table.table_name)}")
            for ddl in _index_ddl(table, table.names.live_q):
                kind = (
                    "primary_key"
                    if "PRIMARY KEY" in ddl
                    else ("gist_indexes" if "gist" in ddl else "root_id_indexes")
                )
                timed(kind, "SET maintenance_work_mem TO '1GB'")
                timed(kind, ddl)
                timed(kind, "SET maintenance_work_mem TO '64MB'")
        total = time.perf_counter() - t0
    finally:
        with admin_connect(admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(copy_db)))
    return {
        "seconds": round(total, 3),
        "template_copy_s": round(copy_s, 3),
        "live_db_closed_s": round(copy_s, 3),
        "rows": merged_rows,
        "steps": {k: round(v, 3) for k, v in steps.items()},
        "strategy": strategy or "server default (WAL_LOG on PostgreSQL 15)",
    }


# ---------------------------------------------------------------------------- insert probe
def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process (like an API server): insert one annotation every ``interval`` s through
    matengine's annotation API until stdin closes; report the latencies."""
    from matengine.annotations import insert_annotations

    engine = open_engine(spec["url"])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    row = {
        "pre_pt": {"position": [100, 100, 20]},
        "ctr_pt": {"position": [101, 100, 20]},
        "post_pt": {"position": [102, 100, 20]},
        "size": 1.0,
    }
    table = spec.get("table", TABLE)
    insert_annotations(engine, DATASTACK, table, [row])  # warm: connection, catalog
    print("ready", flush=True)
    lat: list[float] = []
    slow: list[list[float]] = []  # [wall-clock start, ms] of inserts over the target
    error = None
    while not stop.is_set():
        t, wall = time.perf_counter(), time.time()
        try:
            insert_annotations(engine, DATASTACK, table, [row])
        except Exception as exc:  # reported, never fatal to the benchmark
            error = f"{type(exc).__name__}: {exc}"
            break
        lat.append(time.perf_counter() - t)
        if lat[-1] * 1000 > INSERT_BLOCK_TARGET_MS:
            slow.append([wall, round(lat[-1] * 1000, 1)])
        stop.wait(spec["interval"])
    lat.sort()
    if not lat:
        return {"inserts": 0, "error": error}
    return {
        "inserts": len(lat),
        "max_ms": round(lat[-1] * 1000, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
        "slow": slow,
        "error": error,
    }


class InsertProbe:
    """Runs :func:`_probe` in a child process for the duration of a ``with`` block."""

    def __init__(self, url: str, interval: float = 0.05, table: str = TABLE) -> None:
        self.url, self.interval, self.table = url, interval, table
        self.result: dict[str, Any] = {}

    def __enter__(self) -> InsertProbe:
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_materialize",
                "--probe",
                json.dumps({"url": self.url, "interval": self.interval, "table": self.table}),
            ],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"insert probe did not start: {line!r}")
        return self

    def __exit__(self, *exc) -> None:
        out, _ = self.proc.communicate(timeout=60)
        lines = out.strip().splitlines()
        self.result = json.loads(lines[-1]) if lines else {"inserts": 0, "error": "no output"}


PROBE_TABLE = "insert_probe"  # live inserts go here while a workflow runs on TABLE


class ProbeLog:
    """Live inserts (one every 50 ms, from a child process, into ``PROBE_TABLE`` of the same
    datastack) while each of our workflow runs: the slowest insert per kind of run."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.results: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def for_datastack(cls, engine: Any, url: str) -> ProbeLog:
        """A log for ``DATASTACK`` (its probe table created here)."""
        from matengine import catalog

        catalog.create_table(engine, DATASTACK, PROBE_TABLE, schema="synapse")
        return cls(url)

    @contextmanager
    def during(self, kind: str) -> Iterator[None]:
        if self.url is None:
            yield
            return
        with InsertProbe(self.url, table=PROBE_TABLE) as probe:
            yield
        self.results.setdefault(kind, []).append(probe.result)

    def report_rows(self, size: str) -> list[dict[str, Any]]:
        """One result row per kind of run: the slowest insert during it."""
        out = []
        for kind, got in self.summary().items():
            out.append(
                result_row(
                    f"live insert latency during {kind.replace('_', '-')} ({size} rows, max)",
                    got["max_ms"],
                    None,
                    "ms",
                    target=f"< {INSERT_BLOCK_TARGET_MS} ms",
                    met=got["max_ms"] is not None and got["max_ms"] < INSERT_BLOCK_TARGET_MS,
                    note=f"{got['inserts']} inserts over {got['runs']} runs, p99 {got['p99_ms']} ms"
                    + (f"; errors: {got['errors']}" if got["errors"] else ""),
                )
            )
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for kind, runs in self.results.items():
            done = [r for r in runs if r.get("inserts")]
            out[kind] = {
                "runs": len(runs),
                "inserts": sum(r["inserts"] for r in done),
                "max_ms": max((r["max_ms"] for r in done), default=None),
                "p99_ms": max((r["p99_ms"] for r in done), default=None),
                "errors": [r["error"] for r in runs if r.get("error")],
            }
        return out


# ---------------------------------------------------------------------------- run
def run(
    rows: int | str = 1_000_000,
    *,
    workdir: str | Path | None = None,
    info=None,
    probe_interval: float = 0.05,
    strategy: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    from matengine import catalog
    from matengine.db.identifiers import quote, version_schema

    rows = parse_rows(rows)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench_mat_") as tmp:
        if info is None:
            info = dataset(Path(tmp) / "ds", rows, seed=seed)
        with scratch_database("mat") as url:
            engine = open_engine(url)
            add_datastack(engine, info)
            upload = run_workflow(engine, "bulk_upload", upload_params(info), table=TABLE)
            table = catalog.get_table(engine, DATASTACK, TABLE)
            when = table.roots_last_updated

            base = field_procedure(url, table, when, strategy=strategy)

            engine = open_engine(url)
            checkpoint(engine)
            with InsertProbe(url, probe_interval) as probe:
                ours = run_workflow(engine, "materialize", {"tables": [TABLE], "timestamp": when.isoformat()})
            version = ours["result"]["version"]
            with engine.connect() as conn:
                count = conn.execute(
                    text(f"SELECT count(*) FROM {quote(version_schema(DATASTACK, version), TABLE)}")
                ).scalar_one()
            probe_summary = probe.result
            # what the workflow was doing when an insert was slow
            probe_summary["slow"] = [
                {"ms": ms, "during": step_at(ours["spans"], when_s), "at": round(when_s, 3)}
                for when_s, ms in probe_summary.get("slow", [])
            ]
    if count != rows or base["rows"] != rows:
        raise RuntimeError(f"version has {count} rows, baseline {base['rows']}, expected {rows}")
    ratio_t = round(ours["seconds"] / base["seconds"], 3)
    ours_rate = rate(rows, ours["seconds"])
    out_rows = [
        result_row(
            f"materialize {human(rows)} rows vs template copy + merge + re-index",
            ours["seconds"],
            base["seconds"],
            "s",
            ratio_value=ratio_t,
            target=f"<= {TIME_RATIO_TARGET}x time",
            met=ratio_t <= TIME_RATIO_TARGET,
            note=f"ratio = ours/baseline; baseline: template copy {base['template_copy_s']}"
            f" s, merge+index {round(base['seconds'] - base['template_copy_s'], 2)} s",
        ),
        result_row(
            "materialize rate",
            ours_rate,
            rate(rows, base["seconds"]),
            "rows/s",
            target=f">= {human(RATE_TARGET)} rows/s",
            met=ours_rate >= RATE_TARGET,
        ),
    ]
    if probe_summary.get("inserts"):
        out_rows.append(
            result_row(
                "live insert latency during materialize (max)",
                probe_summary["max_ms"],
                base["live_db_closed_s"] * 1000,
                "ms",
                target=f"< {INSERT_BLOCK_TARGET_MS} ms",
                met=probe_summary["max_ms"] < INSERT_BLOCK_TARGET_MS,
                note=f"{probe_summary['inserts']} inserts, p99 {probe_summary['p99_ms']} ms; "
                "baseline = time the live db must have no connections"
                + (
                    f"; slow inserts during: {sorted({s['during'] for s in probe_summary['slow']})}"
                    if probe_summary.get("slow")
                    else ""
                ),
            )
        )
    return {
        "benchmark": "materialize",
        "rows": out_rows,
        "n_rows": rows,
        "ours": ours,
        "baseline": base,
        "insert_probe": probe_summary,
        "upload_seconds": upload["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1M")
    p.add_argument(
        "--strategy",
        choices=["WAL_LOG", "FILE_COPY"],
        help="CREATE DATABASE strategy of the baseline (default: the server's)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(_probe(json.loads(args.probe))), flush=True)
        return 0
    result = run(args.rows, strategy=args.strategy)
    from bench.report import show

    show(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
