"""Annotation writes during and between runs: never blocked by a materialization, and they
land in exactly the versions the time rule puts them in."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from matengine import annotations as ann
from matengine import catalog
from matengine.db.connection import sqlalchemy_url
from matengine.errors import Conflict
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle
from matengine.timeutil import utcnow
from matengine.workflows import runs
from matengine.workflows.submit import sync_parameters

from .helpers import assert_same_rows, load_dataset, make_datastack, read_version

log = logging.getLogger(__name__)


def _row(oracle: Oracle, i: int) -> dict:
    base = oracle.base_rows("synapses")
    j = i % len(base["id"])
    return {
        "pre_pt": {"position": base["pre_pt_position"][j].tolist()},
        "ctr_pt": {"position": base["ctr_pt_position"][j].tolist()},
        "post_pt": {"position": base["post_pt_position"][-j - 1].tolist()},
        "size": float(i),
    }


@pytest.fixture(scope="module")
def mid_synth(tmp_path_factory):
    from datetime import timedelta

    now = utcnow().replace(microsecond=0)
    return generate_dataset(
        tmp_path_factory.mktemp("mid"),
        synapses=60_000,
        cells=10,
        edits=40,
        seed=5,
        start=now - timedelta(days=2),
        span=timedelta(days=1),
    )


class LockWatch:
    """Samples pg_stat_activity every few ms: how long did the writer wait on a lock?"""

    def __init__(self, engine, application: str):
        self.engine, self.application = engine, application
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        waiting_since: dict[int, float] = {}
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                pids = set(
                    conn.execute(
                        text(
                            "SELECT pid FROM pg_stat_activity WHERE application_name = :a "
                            "AND wait_event_type = 'Lock'"
                        ),
                        {"a": self.application},
                    ).scalars()
                )
                conn.commit()
                now = time.perf_counter()
                for pid in pids:
                    waiting_since.setdefault(pid, now)
                    self.longest = max(self.longest, now - waiting_since[pid])
                for pid in set(waiting_since) - pids:
                    del waiting_since[pid]
                time.sleep(0.002)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_inserts_during_materialization_are_not_blocked(engine, database_url, mid_synth):
    name = f"live_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, mid_synth)
    load_dataset(engine, name, mid_synth)
    oracle = Oracle(mid_synth.directory)
    writer_engine = create_engine(
        sqlalchemy_url(database_url),
        connect_args={"application_name": "live-writer", "options": "-c timezone=UTC"},
    )
    latencies: list[float] = []
    written: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            written.extend(ann.insert_annotations(writer_engine, name, "synapses", [_row(oracle, i)]))
            latencies.append(time.perf_counter() - t0)
            i += 1
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    with LockWatch(engine, "live-writer") as watch:
        thread.start()
        time.sleep(0.2)
        when = utcnow()
        t0 = time.perf_counter()
        # the materialization runs where it would in production: in another process
        done = subprocess.run(
            [sys.executable, "-m", "matengine", "complete", name, "--timestamp", when.isoformat(), "--json"],
            env={**os.environ, "MATENGINE_DATABASE_URL": database_url, "MATENGINE_CHUNK_ROWS": "20000"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        took = time.perf_counter() - t0
        time.sleep(0.2)
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    log.warning(
        "materialized %s rows in %.2f s while %d single-row inserts ran: longest lock "
        "wait %.1f ms, slowest insert %.1f ms (wall time, CPU shared)",
        run["rows_done"],
        took,
        len(latencies),
        watch.longest * 1000,
        max(latencies) * 1000,
    )
    assert len(latencies) > 20
    assert watch.longest < 0.1, f"an insert waited {watch.longest * 1000:.0f} ms on a lock"
    # the version holds exactly the rows stamped at or before its time
    rows = ann.get_annotations(engine, name, "synapses", written)
    extra = [
        {
            "id": r["id"],
            "created": r["created"],
            **{k: r[k] for k in ("pre_pt_position", "ctr_pt_position", "post_pt_position", "size")},
        }
        for r in rows
    ]
    assert {r["created"] <= when for r in rows} == {True, False}
    assert_same_rows(
        read_version(engine, name, 1, "synapses"), oracle.table_at("synapses", when, extra_rows=extra)
    )
    writer_engine.dispose()
    catalog.drop_datastack(engine, name)


def test_two_materializations_at_once_second_refused(engine, loaded):
    params = sync_parameters(engine, "complete", loaded)
    first = runs.create_run(engine, "complete", params, datastack=loaded)
    with pytest.raises(Conflict, match=f"run {first} is still active"):
        runs.create_run(engine, "materialize", params, datastack=loaded)
    runs.finish_run(engine, first, "CANCELLED")
