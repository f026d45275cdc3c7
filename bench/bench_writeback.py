"""Benchmark: live inserts during index builds, with and without writeback pacing, in one run.

On a synthetic table shaped like a synapse version store (``rows`` rows, three points, two
roots), the store's seven indexes are built two side by side (as the ``index`` step builds
them) twice: once as PostgreSQL alone does it, once inside :func:`matengine.db.writeback.pacing`.
During each, a child process commits one insert every 50 ms into a small indexed table; the
report gives the slowest insert, the p99 and the build time of each (docs/operations.md, "Live
inserts during bulk work"). The order alternates each repetition, so neither side always runs
on a warmer cache.

Usage: ``python -m bench.bench_writeback --rows 10M [--repeat 2] [--json]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import threading
import time
from contextlib import nullcontext
from typing import Any

from bench import admin_connect, human, open_engine, parse_rows, result_row, scratch_database

INSERT_TARGET_MS = 100
INDEXES = [
    "CREATE INDEX ix_pre_bbox ON store USING gist (point(pre_x, pre_y))",
    "CREATE INDEX ix_post_bbox ON store USING gist (point(post_x, post_y))",
    "CREATE INDEX ix_ctr_bbox ON store USING gist (point(ctr_x, ctr_y))",
    "CREATE INDEX ix_pre_root ON store (pre_root, v_from)",
    "CREATE INDEX ix_post_root ON store (post_root, v_from)",
    "CREATE UNIQUE INDEX ix_id_vfrom ON store (id, v_from)",
    "CREATE INDEX ix_vfrom ON store (v_from)",
]
TABLE_SQL = """
CREATE TABLE store AS SELECT g AS id, now() AS created,
  (random() * 1e5)::int AS pre_x, (random() * 1e5)::int AS pre_y, (random() * 1e4)::int AS pre_z,
  (random() * 1e5)::int AS post_x, (random() * 1e5)::int AS post_y, (random() * 1e4)::int AS post_z,
  (random() * 1e5)::int AS ctr_x, (random() * 1e5)::int AS ctr_y, (random() * 1e4)::int AS ctr_z,
  (random() * 1e15)::bigint AS pre_sv, (random() * 1e15)::bigint AS post_sv,
  (random() * 1e6)::bigint AS pre_root, (random() * 1e6)::bigint AS post_root,
  random() * 100 AS size, 1 AS v_from, 2147483647 AS v_to
FROM generate_series(1, %(rows)s) g
"""


def _probe(url: str, stop: Any, out: Any) -> None:
    """Commit one insert every 50 ms until ``stop``; put the latencies (ms) on ``out``."""
    rng = random.Random(0)
    latencies = []
    with admin_connect(url) as conn:
        while not stop.is_set():
            t = time.perf_counter()
            conn.execute(
                "INSERT INTO probe (x, y, root) VALUES (%s, %s, %s)",
                (rng.randint(0, 99_999), rng.randint(0, 99_999), rng.randint(0, 10**6)),
            )
            latencies.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)
    out.put(latencies)


def _build(url: str, paced: bool) -> dict[str, Any]:
    from matengine.db import writeback

    with admin_connect(url) as conn:
        for ddl in INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {ddl.split(' ON ')[0].split()[-1]}")
        conn.execute("CHECKPOINT")  # both sides start with nothing dirty
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    probe = ctx.Process(target=_probe, args=(url, stop, out))
    probe.start()
    time.sleep(1.0)
    todo, lock = list(INDEXES), threading.Lock()

    def builder() -> None:
        with admin_connect(url) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            while True:
                with lock:
                    if not todo:
                        return
                    ddl = todo.pop(0)
                conn.execute(ddl)

    engine = open_engine(url)
    t = time.perf_counter()
    with writeback.pacing(engine) if paced else nullcontext():
        threads = [threading.Thread(target=builder) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    seconds = time.perf_counter() - t
    stop.set()
    latencies = sorted(out.get(timeout=60))
    probe.join()
    engine.dispose()
    return {
        "seconds": round(seconds, 1),
        "inserts": len(latencies),
        "max_ms": round(latencies[-1], 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1),
    }


def run(rows: int | str = 1_000_000, repeat: int = 2) -> dict[str, Any]:
    from matengine.db import writeback

    rows = parse_rows(rows)
    runs: dict[str, list[dict[str, Any]]] = {"stock": [], "paced": []}
    with scratch_database("writeback") as url:
        with admin_connect(url) as conn:
            conn.execute(TABLE_SQL, {"rows": rows})
            conn.execute("CREATE TABLE probe (id bigserial PRIMARY KEY, x int, y int, root bigint)")
            conn.execute("CREATE INDEX ON probe USING gist (point(x, y))")
            conn.execute("CREATE INDEX ON probe (root)")
            conn.execute("VACUUM ANALYZE store")
        paced_possible = writeback.supported() and writeback.database_directory(open_engine(url)) is not None
        for i in range(repeat):
            order = ["stock", "paced"] if i % 2 == 0 else ["paced", "stock"]
            for side in order:
                runs[side].append(_build(url, paced=side == "paced"))
    worst = {side: max(r["max_ms"] for r in got) for side, got in runs.items()}
    p99 = {side: max(r["p99_ms"] for r in got) for side, got in runs.items()}
    secs = {side: min(r["seconds"] for r in got) for side, got in runs.items()}
    size = human(rows)
    out_rows = [
        result_row(
            f"live insert during 7 index builds on {size} rows, paced writeback (max)",
            worst["paced"],
            worst["stock"],
            "ms",
            ratio_value=round(worst["paced"] / worst["stock"], 3) if worst["stock"] else None,
            target=f"< {INSERT_TARGET_MS} ms",
            met=paced_possible and worst["paced"] < INSERT_TARGET_MS,
            note=f"p99 {p99['paced']} ms paced, {p99['stock']} ms stock; {repeat} runs each"
            + ("" if paced_possible else "; the server's data folder is not on this machine: nothing paced"),
        ),
        result_row(
            f"index builds on {size} rows, paced vs stock",
            secs["paced"],
            secs["stock"],
            "s",
            ratio_value=round(secs["paced"] / secs["stock"], 3) if secs["stock"] else None,
            target="<= 1.1x",
            met=secs["paced"] <= 1.1 * secs["stock"],
        ),
    ]
    return {"benchmark": "writeback", "rows": out_rows, "n_rows": rows, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1M")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.rows, args.repeat)
    from bench.report import show

    show(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
