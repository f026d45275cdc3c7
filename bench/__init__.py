"""Benchmarks of matengine against the baselines they must beat (docs/design.md §8).

Every benchmark measures our workflow and its baseline on the same data in the same run, in a
scratch database created for the run and dropped after it, and returns a dict whose ``rows``
list holds one entry per comparison (see :func:`result_row`); ``bench.report`` prints them as
one table. This module holds what the benchmarks share: row counts, scratch databases,
synthetic datasets, running a workflow in-process with a per-step time profile.

Run from the repository root: ``python -m bench.report --rows 1M`` or ``matengine bench``.
"""

from __future__ import annotations

import json
import os
import re
import resource
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

ADMIN_URL_ENV = "MATENGINE_BENCH_ADMIN_URL"
DATASTACK = "bench"
TABLE = "synapses"
SCHEMA = "synapse"


# ---------------------------------------------------------------------------- numbers
def parse_rows(value: str | int) -> int:
    """``1M``, ``10M``, ``20k``, ``2.5M``, ``1_000_000`` -> int."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kKmM]?)\s*", str(value))
    if not m:
        raise ValueError(f"not a row count: {value!r} (use e.g. 20k, 1M, 10M or 1000000)")
    number = float(m.group(1).replace("_", ""))
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    rows = int(round(number * scale))
    if rows <= 0:
        raise ValueError(f"row count must be positive: {value!r}")
    return rows


def human(n: float) -> str:
    """3000000 -> '3M', 20000 -> '20k'."""
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div:
            v = n / div
            return f"{v:.0f}{suffix}" if v == int(v) else f"{v:.1f}{suffix}"
    return str(int(n))


def rate(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def ratio(a: float, b: float) -> float | None:
    if not b or a is None or b is None:
        return None
    return round(a / b, 3)


def result_row(
    operation: str,
    ours: float | None,
    baseline: float | None,
    unit: str,
    *,
    ratio_value: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the report. ``ratio_value`` is what the target is judged on, expressed so
    that bigger is better for rates (ours / baseline) or as written in the target for times."""
    if ratio_value is None and ours is not None and baseline:
        ratio_value = ratio(ours, baseline)
    return {
        "operation": operation,
        "ours": ours,
        "baseline": baseline,
        "unit": unit,
        "ratio": ratio_value,
        "target": target,
        "met": met,
        "note": note,
    }


def peak_rss_mb() -> float:
    """Peak resident set of this process image so far, in MB.

    ``VmHWM`` (Linux) counts from this process's exec; ``ru_maxrss`` would also count the
    parent's pages at fork time, so it is only the fallback.
    """
    try:
        status = Path("/proc/self/status").read_text()
        kib = int(re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M).group(1))
    except (OSError, AttributeError):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)


# ---------------------------------------------------------------------------- databases
def admin_url() -> str:
    """Server on which scratch databases are created: ``$MATENGINE_BENCH_ADMIN_URL``, else the
    configured database URL (``--database-url`` / ``MATENGINE_DATABASE_URL``), else the
    embedded server."""
    url = os.environ.get(ADMIN_URL_ENV)
    if url:
        return url
    from matengine.db.connection import resolve_database_url

    return resolve_database_url()


def database_url(base: str, name: str) -> str:
    """``base`` pointing at database ``name`` (host, socket and options kept)."""
    from matengine.db.connection import libpq_url

    return libpq_url(make_url(base).set(database=name).render_as_string(hide_password=False))


def admin_connect(url: str):
    import psycopg

    from matengine.db.connection import libpq_url

    return psycopg.connect(libpq_url(url), autocommit=True)


@contextmanager
def scratch_database(tag: str, admin: str | None = None) -> Iterator[str]:
    """A fresh database on the admin server for one benchmark; dropped (FORCE) afterwards."""
    from psycopg import sql

    admin = admin or admin_url()
    name = f"matengine_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with admin_connect(admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(admin, name)
    try:
        yield url
    finally:
        release_engine(url)
        with admin_connect(admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def open_engine(url: str) -> Engine:
    """matengine's engine for ``url`` (metadata schema migrated on first use)."""
    from matengine.db.connection import get_engine

    return get_engine(url)


def release_engine(url: str) -> None:
    """Close every pooled connection to ``url`` (the engine reconnects when used again)."""
    from matengine.db import connection

    for key, engine in list(connection._engines.items()):
        if make_url(key).database == make_url(url).database:
            engine.dispose()


# ---------------------------------------------------------------------------- datasets
def volume_for(rows: int) -> dict[str, Any]:
    """Volume and graph sizes: large enough that points spread over ~1000 chunks at 1M rows,
    small for smoke runs."""
    if rows >= 200_000:
        return {"size": (1024, 1024, 256), "supervoxels": 200_000, "initial_roots": 25_000, "edits": 5_000}
    return {"size": (256, 256, 64), "supervoxels": 8_000, "initial_roots": 1_000, "edits": 300}


def dataset(directory: str | Path, rows: int, *, seed: int = 0, edits: int | None = None):
    """A synthetic dataset with ``rows`` synapses and enough edits that ~20% of the initial
    roots expire over its time span (cached: reused if ``directory`` holds one made with the
    same parameters)."""
    from matengine.synth.generate import generate_dataset, load_info

    directory = Path(directory)
    vol = volume_for(rows)
    if edits is not None:  # more history, e.g. for many versions with a share of roots changed each
        vol["edits"] = int(edits)
    params = {"rows": rows, "seed": seed, **vol, "size": list(vol["size"])}
    stamp = directory / "bench-params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return load_info(directory)
    info = generate_dataset(
        directory,
        size=vol["size"],
        supervoxels=vol["supervoxels"],
        initial_roots=vol["initial_roots"],
        edits=vol["edits"],
        synapses=rows,
        cells=0,
        seed=seed,
    )
    stamp.write_text(json.dumps(params))
    return info


def add_datastack(engine: Engine, info, name: str = DATASTACK) -> str:
    from matengine import catalog

    catalog.add_datastack(
        engine, name, segmentation_source=info.graph_url, voxel_resolution=info.annotation_resolution
    )
    return name


def admit_source(folder: Path) -> None:
    """Uploads read only under MATENGINE_SOURCE_ROOTS: the bench made this folder itself, so
    it adds it (in the environment too, for the child processes and workers it starts)."""
    import os

    from matengine.config import configure

    roots = [r for r in os.environ.get("MATENGINE_SOURCE_ROOTS", "").split(",") if r.strip()]
    if str(folder) not in roots:
        roots.append(str(folder))
    os.environ["MATENGINE_SOURCE_ROOTS"] = ",".join(roots)
    configure(source_roots=os.environ["MATENGINE_SOURCE_ROOTS"])


def upload_params(
    info,
    *,
    with_segmentation: bool = True,
    table: str = TABLE,
    datastack: str = DATASTACK,
    source: str | Path | None = None,
) -> dict[str, Any]:
    """bulk_upload parameters for the dataset's synapses; without segmentation columns the
    rows wait for ingest."""
    folder = Path(source) if source else info.tables["synapses"]
    admit_source(folder)
    mapping = json.loads((folder / "column_mapping.json").read_text())
    if not with_segmentation:
        mapping = {k: v for k, v in mapping.items() if k not in ("sv_ids_ordered", "root_ids_ordered")}
    return {
        "datastack": datastack,
        "table": table,
        "schema": SCHEMA,
        "source": f"file://{folder}",
        "column_mapping": mapping,
        "roots_timestamp": info.initial_timestamp.isoformat() if with_segmentation else None,
        "created": info.start.isoformat(),
    }


# ---------------------------------------------------------------------------- workflows
class StepProfile:
    """Wall time per (step, phase) of in-process runs: wraps the engine's plan / chunk /
    finish calls, so the engine's own bookkeeping is counted with the step it serves."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[int, str], float] = defaultdict(float)
        self.chunks: dict[int, int] = defaultdict(int)
        # (wall-clock start, end, step index, phase): to tell what ran at a given moment
        self.spans: list[tuple[float, float, int, str]] = []

    @contextmanager
    def active(self) -> Iterator[StepProfile]:
        from matengine.workflows import engine as eng

        originals = {n: getattr(eng, n) for n in ("plan_step", "run_chunk", "finish_step")}

        def timed(name: str, phase: str):
            fn = originals[name]

            def wrapper(engine, run_id, index, *args):
                t, wall = time.perf_counter(), time.time()
                try:
                    return fn(engine, run_id, index, *args)
                finally:
                    self.seconds[(index, phase)] += time.perf_counter() - t
                    self.spans.append((wall, time.time(), index, phase))
                    if phase == "chunks":
                        self.chunks[index] += 1

            return wrapper

        eng.plan_step = timed("plan_step", "plan")
        eng.run_chunk = timed("run_chunk", "chunks")
        eng.finish_step = timed("finish_step", "finish")
        try:
            yield self
        finally:
            for n, fn in originals.items():
                setattr(eng, n, fn)

    def table(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = {s["index"]: s["key"] for s in steps}
        out = []
        for index in sorted({i for i, _ in self.seconds}):
            phases = {p: round(self.seconds.get((index, p), 0.0), 3) for p in ("plan", "chunks", "finish")}
            out.append(
                {
                    "step": keys.get(index, str(index)),
                    **phases,
                    "n_chunks": self.chunks.get(index, 0),
                    "total": round(sum(phases.values()), 3),
                }
            )
        return out


def run_workflow(
    engine: Engine, kind: str, params: dict[str, Any], *, datastack: str = DATASTACK, table: str | None = None
) -> dict[str, Any]:
    """Run a workflow in this process (the embedded worker's code path) and time it."""
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows import runs
    from matengine.workflows.engine import execute_inline

    profile = StepProfile()
    t = time.perf_counter()
    run_id = runs.create_run(engine, kind, params, datastack=datastack, table_name=table)
    with profile.active():
        run = execute_inline(engine, run_id)
    seconds = time.perf_counter() - t
    if run.state != "SUCCESS":
        raise RuntimeError(f"{kind} run {run_id} ended {run.state}: {run.errors}")
    return {
        "run_id": run_id,
        "seconds": round(seconds, 3),
        "rows": run.rows_done,
        "steps": profile.table(run.steps),
        "result": run.result,
        "spans": _spans(profile, run.steps),
    }


def _spans(profile: StepProfile, steps: list[dict[str, Any]]) -> list[list[Any]]:
    """[start, end, step key, phase] in wall-clock seconds, merged per (step, phase)."""
    keys = {s["index"]: s["key"] for s in steps}
    out: list[list[Any]] = []
    for start, end, index, phase in sorted(profile.spans):
        key = keys.get(index, str(index))
        if out and out[-1][2:] == [key, phase]:
            out[-1][1] = round(end, 3)
        else:
            out.append([round(start, 3), round(end, 3), key, phase])
    return out


def step_at(spans: list[list[Any]], when: float) -> str:
    """Which step and phase of a run (its ``spans``) ran at wall-clock time ``when``."""
    for start, end, key, phase in spans:
        if start <= when <= end:
            return f"{key} {phase}"
    return "between steps"


def set_roots_time(engine: Engine, when, table: str = TABLE, datastack: str = DATASTACK) -> None:
    from matengine import catalog

    t = catalog.get_table(engine, datastack, table)
    with engine.begin() as conn:
        catalog.set_roots_last_updated(conn, t, when)


def checkpoint(engine: Engine) -> None:
    """Flush dirty buffers before a timed section, so it does not pay for the previous one's
    writes (needs superuser or pg_checkpoint; skipped otherwise)."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    except Exception:  # a benchmark without the privilege is still a benchmark
        pass


def vacuum_analyze(engine: Engine, *tables_q: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for q in tables_q:
            conn.execute(text(f"VACUUM (ANALYZE) {q}"))


def table_names(engine: Engine, table: str = TABLE, datastack: str = DATASTACK):
    from matengine import catalog

    return catalog.get_table(engine, datastack, table).names
