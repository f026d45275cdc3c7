"""Benchmark: bulk upload of N synapse rows from ``.npy`` columns, beside its baselines.

* ours: the ``bulk_upload`` workflow, in-process, in a child process (so its peak RSS is the
  upload's own), chunked, binary COPY, secondary indexes rebuilt after a large load;
* baseline (a): raw ``COPY … FROM STDIN (FORMAT binary)`` of the same rows into identical
  fresh tables, one stream per table, buffers built with ``binary_copy_buffer`` from the
  memory-mapped ``.npy`` files -- and the same indexes as ours at the end (dropped before and
  rebuilt after a load of ``LARGE_LOAD`` rows or more, exactly as ours does), so both end in
  the same state. Its COPY-only time is reported too;
* baseline (b): row-wise SQLAlchemy ``executemany`` of dict rows (``text()`` INSERTs, one per
  row) on a sample, extrapolated; SQLAlchemy Core ``insert()`` (insertmanyvalues batches) is
  measured on the same sample for reference;
* peak RSS of the uploading process at N rows and at a second scale -- ``rss_factor`` x N
  rows (the same rows tiled) up to ``RSS_MAX_TILED`` rows, else N / ``rss_factor`` (a prefix):
  flat means memory does not grow with the row count.

Usage: ``python -m bench.bench_upload --rows 1M [--json]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from bench import (
    SCHEMA,
    TABLE,
    add_datastack,
    dataset,
    human,
    open_engine,
    parse_rows,
    peak_rss_mb,
    rate,
    result_row,
    run_workflow,
    scratch_database,
    upload_params,
)
from bench.bench_materialize import ProbeLog

EXECUTEMANY_SAMPLE = 50_000
COPY_BLOCK = 1_000_000  # rows per buffer written into the one COPY stream
RSS_FLAT = 1.25  # peak RSS of the larger upload within this factor of the smaller one's
RSS_MAX_TILED = 3_000_000  # above this, the second RSS scale is smaller than N, not larger


# ---------------------------------------------------------------------------- ours (child)
def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh interpreter: upload, report time and peak RSS."""
    engine = open_engine(spec["url"])
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    before = peak_rss_mb()
    out = run_workflow(
        engine,
        "bulk_upload",
        spec["params"],
        datastack=spec["params"]["datastack"],
        table=spec["params"]["table"],
    )
    out["rss_before_mb"] = before
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def upload_in_child(url: str, params: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_repo_root()), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_upload", "--child", json.dumps({"url": url, "params": params})],
        cwd=_repo_root(),
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"upload child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- data
def _load_columns(folder: Path) -> dict[str, np.ndarray]:
    return {f.stem: np.load(f, mmap_mode="r") for f in folder.glob("*.npy")}


def _live_columns(
    cols: dict[str, np.ndarray], a: int, b: int, created_us: int
) -> list[tuple[np.ndarray, str]]:
    n = b - a
    out = [(np.asarray(cols["id"][a:b], np.int64), "bigint"), (np.ones(n, bool), "boolean")]
    for f in ("presyn_coords", "center_coords", "postsyn_coords"):
        block = np.asarray(cols[f][a:b])
        out += [(block[:, k].astype(np.float64), "double precision") for k in range(3)]
    out.append((np.asarray(cols["sizes"][a:b], np.float64), "double precision"))
    out.append((np.full(n, created_us, np.int64), "timestamptz"))
    return out


LIVE_COLS = (
    ["id", "valid"]
    + [f"{p}_position_{a}" for p in ("pre_pt", "ctr_pt", "post_pt") for a in "xyz"]
    + ["size", "created"]
)
SEG_COLS = ["id", "pre_pt_supervoxel_id", "post_pt_supervoxel_id", "pre_pt_root_id", "post_pt_root_id"]


def _seg_columns(cols: dict[str, np.ndarray], a: int, b: int) -> list[tuple[np.ndarray, str]]:
    sv, root = np.asarray(cols["sv_ids_ordered"][a:b]), np.asarray(cols["root_ids_ordered"][a:b])
    return [
        (np.asarray(cols["id"][a:b], np.int64), "bigint"),
        (sv[:, 0], "bigint"),
        (sv[:, 1], "bigint"),
        (root[:, 0], "bigint"),
        (root[:, 1], "bigint"),
    ]


def _fresh_tables(engine: Engine, datastack: str, info) -> Any:
    """Identical tables to ours (same DDL, same indexes), registered as a table of a datastack."""
    from matengine import catalog

    add_datastack(engine, info, datastack)
    return catalog.create_table(engine, datastack, TABLE, schema=SCHEMA)


# ---------------------------------------------------------------------------- baseline (a)
def raw_copy(engine: Engine, info, folder: Path, rows: int) -> dict[str, Any]:
    """One binary COPY stream per table; indexes handled as ours handles them."""
    from matengine.db.annotation_tables import build_indexes, drop_indexes
    from matengine.db.copy import HEADER, TRAILER, binary_copy_buffer, timestamptz_value
    from matengine.db.identifiers import quote
    from matengine.workflows.bulk_upload import LARGE_LOAD

    table = _fresh_tables(engine, "bench_copy", info)
    names, schema = table.names, table.schema
    cols = _load_columns(folder)
    created_us = timestamptz_value(info.start)
    rebuild = rows >= LARGE_LOAD
    t0 = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        if rebuild:
            with engine.begin() as conn:
                drop_indexes(conn, names, schema)
        t_copy = time.perf_counter()
        for table_q, colnames, build in (
            (names.live_q, LIVE_COLS, lambda a, b: _live_columns(cols, a, b, created_us)),
            (names.segmentation_q, SEG_COLS, lambda a, b: _seg_columns(cols, a, b)),
        ):
            sql = f"COPY {table_q} ({', '.join(quote(c) for c in colnames)}) FROM STDIN (FORMAT binary)"
            with cur.copy(sql) as copy:
                copy.write(HEADER)
                for a in range(0, rows, COPY_BLOCK):
                    buf = binary_copy_buffer(build(a, min(rows, a + COPY_BLOCK)))
                    copy.write(memoryview(buf)[len(HEADER) : len(buf) - len(TRAILER)])
                copy.write(TRAILER)
        raw.commit()
        copy_s = time.perf_counter() - t_copy
    finally:
        raw.close()
    t_ix = time.perf_counter()
    if rebuild:
        with engine.begin() as conn:
            build_indexes(conn, names, schema)
    index_s = time.perf_counter() - t_ix
    total_s = time.perf_counter() - t0
    with engine.connect() as conn:
        count = conn.execute(text(f"SELECT count(*) FROM {names.live_q}")).scalar_one()
    if count != rows:
        raise RuntimeError(f"raw COPY wrote {count} rows, expected {rows}")
    return {
        "seconds": round(total_s, 3),
        "copy_seconds": round(copy_s, 3),
        "index_seconds": round(index_s, 3),
        "rebuild_indexes": rebuild,
    }


# ---------------------------------------------------------------------------- baseline (b)
def _dict_rows(cols: dict[str, np.ndarray], n: int, created) -> tuple[list[dict], list[dict]]:
    ids = np.asarray(cols["id"][:n]).tolist()
    pre, ctr, post = (
        np.asarray(cols[f][:n], np.float64).tolist()
        for f in ("presyn_coords", "center_coords", "postsyn_coords")
    )
    sizes = np.asarray(cols["sizes"][:n], np.float64).tolist()
    sv = np.asarray(cols["sv_ids_ordered"][:n]).view(np.int64).tolist()
    roots = np.asarray(cols["root_ids_ordered"][:n]).view(np.int64).tolist()
    live, seg = [], []
    for i in range(n):
        live.append(
            {
                "id": ids[i],
                "created": created,
                "valid": True,
                "pre_pt_position_x": pre[i][0],
                "pre_pt_position_y": pre[i][1],
                "pre_pt_position_z": pre[i][2],
                "ctr_pt_position_x": ctr[i][0],
                "ctr_pt_position_y": ctr[i][1],
                "ctr_pt_position_z": ctr[i][2],
                "post_pt_position_x": post[i][0],
                "post_pt_position_y": post[i][1],
                "post_pt_position_z": post[i][2],
                "size": sizes[i],
            }
        )
        seg.append(
            {
                "id": ids[i],
                "pre_pt_supervoxel_id": sv[i][0],
                "post_pt_supervoxel_id": sv[i][1],
                "pre_pt_root_id": roots[i][0],
                "post_pt_root_id": roots[i][1],
            }
        )
    return live, seg


def executemany(engine: Engine, info, folder: Path, sample: int) -> dict[str, Any]:
    """Row-wise ``executemany`` of dicts (one INSERT per row), then Core ``insert()``."""
    from sqlalchemy import MetaData, Table

    from matengine.db.identifiers import quote

    cols = _load_columns(folder)
    out: dict[str, Any] = {"sample": sample}
    labels = (("rowwise", "bench_em"), ("core_insert", "bench_core"), ("field_orm", "bench_orm"))
    for label, datastack in labels:
        table = _fresh_tables(engine, datastack, info)
        names = table.names
        t = time.perf_counter()
        live, seg = _dict_rows(cols, sample, info.start)
        if label == "field_orm":
            _field_orm_insert(engine, names, live, seg)
            out[f"{label}_seconds"] = round(time.perf_counter() - t, 3)
            out[f"{label}_rows_per_s"] = rate(sample, time.perf_counter() - t)
            continue
        with engine.begin() as conn:
            if label == "rowwise":
                for table_q, dicts in ((names.live_q, live), (names.segmentation_q, seg)):
                    keys = list(dicts[0])
                    stmt = text(
                        f"INSERT INTO {table_q} ({', '.join(quote(k) for k in keys)}) "
                        f"VALUES ({', '.join(':' + k for k in keys)})"
                    )
                    conn.execute(stmt, dicts)
            else:
                md = MetaData()
                live_t = Table(names.table, md, schema=names.datastack, autoload_with=conn)
                seg_t = Table(names.segmentation, md, schema=names.datastack, autoload_with=conn)
                conn.execute(live_t.insert(), live)
                conn.execute(seg_t.insert(), seg)
        out[f"{label}_seconds"] = round(time.perf_counter() - t, 3)
        out[f"{label}_rows_per_s"] = rate(sample, time.perf_counter() - t)
    return out


FIELD_CHUNK_ROWS = 500  # rows per ORM call and commit, as the field's engine chunks its inserts


def _field_orm_insert(engine: Engine, names, live: list[dict], seg: list[dict]) -> None:
    """The field's engine's path: rows in chunks of ``FIELD_CHUNK_ROWS`` through an ORM
    ``Session.bulk_insert_mappings`` (annotation rows, then their segmentation rows), one
    commit per chunk."""
    from sqlalchemy.orm import Session

    from bench.bench_sync import orm_model

    live_model = orm_model(engine, names.datastack, names.table)
    seg_model = orm_model(engine, names.datastack, names.segmentation)
    with Session(engine) as session:
        for i in range(0, len(live), FIELD_CHUNK_ROWS):
            session.bulk_insert_mappings(live_model, live[i : i + FIELD_CHUNK_ROWS])
            session.bulk_insert_mappings(seg_model, seg[i : i + FIELD_CHUNK_ROWS])
            session.commit()


# ---------------------------------------------------------------------------- RSS scale
def scaled_dataset(src: Path, dst: Path, rows: int, block: int = 1_000_000) -> Path:
    """``rows`` synapse rows made of the rows of ``src`` repeated (or cut), ids renumbered."""
    dst.mkdir(parents=True, exist_ok=True)
    cols = _load_columns(src)
    n = len(cols["id"])
    for name, col in cols.items():
        out = np.lib.format.open_memmap(
            dst / f"{name}.npy", mode="w+", dtype=col.dtype, shape=(rows, *col.shape[1:])
        )
        for a in range(0, rows, block):
            b = min(rows, a + block)
            if name == "id":
                out[a:b] = np.arange(a + 1, b + 1)
            else:
                src_idx = np.arange(a, b) % n
                out[a:b] = col[src_idx]
        out.flush()
        del out
    (dst / "column_mapping.json").write_text((src / "column_mapping.json").read_text())
    return dst


def _ceiling(copy_only_rate: float, baseline_rate: float) -> str:
    """What no loader of these rows can beat: PostgreSQL's raw COPY with no index at all,
    against the same baseline (a target above it is out of any loader's reach)."""
    if not baseline_rate:
        return ""
    return f"ceiling: raw COPY alone, no index, is {copy_only_rate / baseline_rate:.1f}x this baseline"


# ---------------------------------------------------------------------------- run
def run(
    rows: int | str = 1_000_000,
    *,
    workdir: str | Path | None = None,
    info=None,
    sample: int = EXECUTEMANY_SAMPLE,
    rss_factor: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    rows = parse_rows(rows)
    sample = min(sample, max(1000, rows // 4))
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench_upload_") as tmp:
        t = time.perf_counter()
        if info is None:
            info = dataset(Path(tmp) / "ds", rows, seed=seed)
        folder = info.tables["synapses"]
        other_rows = 0
        if rss_factor > 1:
            other_rows = rows * rss_factor if rows * rss_factor <= RSS_MAX_TILED else rows // rss_factor
        rss_folder = scaled_dataset(folder, Path(tmp) / "rss", other_rows) if other_rows else None
        setup_s = time.perf_counter() - t
        with scratch_database("upload") as url:
            engine = open_engine(url)
            add_datastack(engine, info)
            probes = ProbeLog.for_datastack(engine, url)
            with probes.during("upload"):
                ours = upload_in_child(url, upload_params(info))
            copy = raw_copy(engine, info, folder, rows)
            em = executemany(engine, info, folder, sample)
            big = None
            if rss_folder is not None:
                add_datastack(engine, info, "bench_rss")
                big = upload_in_child(url, upload_params(info, datastack="bench_rss", source=rss_folder))
    ours_rate = rate(rows, ours["seconds"])
    copy_rate = rate(rows, copy["seconds"])
    copy_only_rate = rate(rows, copy["copy_seconds"])
    em_rate = em["rowwise_rows_per_s"]
    out_rows = [
        result_row(
            f"bulk upload {human(rows)} rows vs raw COPY (same end state)",
            ours_rate,
            copy_rate,
            "rows/s",
            target=">= 0.7x",
            met=ours_rate >= 0.7 * copy_rate,
            note=f"raw COPY {copy['copy_seconds']} s + indexes {copy['index_seconds']} s; "
            f"ours {ours['seconds']} s",
        ),
        result_row(
            f"bulk upload {human(rows)} rows vs raw COPY alone (no index build)",
            ours_rate,
            copy_only_rate,
            "rows/s",
            note="informational",
        ),
        result_row(
            f"bulk upload vs row-wise executemany ({human(sample)} sample)",
            ours_rate,
            em_rate,
            "rows/s",
            target=">= 30x",
            met=ours_rate >= 30 * em_rate,
            note=_ceiling(copy_only_rate, em_rate),
        ),
        result_row(
            f"bulk upload vs the field's path: ORM bulk_insert_mappings, {FIELD_CHUNK_ROWS}-row chunks",
            ours_rate,
            em["field_orm_rows_per_s"],
            "rows/s",
            target=">= 30x",
            met=ours_rate >= 30 * em["field_orm_rows_per_s"],
            note=f"{human(sample)} sample, a commit per chunk; "
            + _ceiling(copy_only_rate, em["field_orm_rows_per_s"]),
        ),
        result_row(
            "bulk upload vs Core insert() executemany (insertmanyvalues)",
            ours_rate,
            em["core_insert_rows_per_s"],
            "rows/s",
            note="informational",
        ),
    ]
    out_rows += probes.report_rows(human(rows))
    if big is not None:
        (small_n, small), (large_n, large) = sorted([(rows, ours), (other_rows, big)], key=lambda x: x[0])
        flat = large["peak_rss_mb"] <= RSS_FLAT * small["peak_rss_mb"]
        out_rows.append(
            result_row(
                f"upload peak RSS at {human(large_n)} vs {human(small_n)} rows",
                large["peak_rss_mb"],
                small["peak_rss_mb"],
                "MB",
                target=f"flat (<= {RSS_FLAT}x)",
                met=flat,
                note=f"{human(other_rows)} rows at {rate(other_rows, big['seconds'])} rows/s",
            )
        )
    return {
        "benchmark": "upload",
        "rows": out_rows,
        "n_rows": rows,
        "setup_seconds": round(setup_s, 2),
        "ours": ours,
        "raw_copy": copy,
        "executemany": em,
        "rss_scale": None if big is None else {"rows": other_rows, **big},
        "insert_probes": probes.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1M")
    p.add_argument("--sample", type=int, default=EXECUTEMANY_SAMPLE)
    p.add_argument("--rss-factor", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child)), default=str))
        return 0
    result = run(args.rows, sample=args.sample, rss_factor=args.rss_factor)
    from bench.report import show

    show(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
