"""Reliability (docs/design.md §9): a worker SIGKILLed mid update-roots and mid materialize, and a
PostgreSQL restart mid-run — the run completes and equals the oracle."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from matengine import catalog
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle
from matengine.timeutil import utcnow
from matengine.workflows import runs
from matengine.workflows.submit import submit, sync_parameters, wait_for

from .helpers import assert_same_rows, load_dataset, make_datastack, read_version
from .workers import BROKERS, Worker, broker_settings, wait_until


@pytest.fixture(scope="module")
def edit_heavy(tmp_path_factory):
    now = utcnow().replace(microsecond=0)
    return generate_dataset(
        tmp_path_factory.mktemp("kill"),
        synapses=40_000,
        cells=10,
        supervoxels=4000,
        edits=600,
        seed=9,
        start=now - timedelta(days=2),
        span=timedelta(days=1),
    )


def _kill_when(engine, run_id, step_prefix: str, min_chunks: int):
    def reached():
        run = runs.get_run(engine, run_id)
        return any(s["chunks_done"] >= min_chunks for s in run.steps if s["key"].startswith(step_prefix))

    try:
        wait_until(reached, timeout=60, poll=0.01)
    except TimeoutError:
        run = runs.get_run(engine, run_id)
        raise AssertionError(
            f"never reached {step_prefix}: {run.state} {run.errors} "
            f"{[(s['key'], s['chunks_done'], s['chunks_total']) for s in run.steps]}"
        ) from None


@pytest.mark.parametrize("step", ["update_roots", "merge"])
def test_worker_killed_mid_step_run_completes_exactly(engine, database_url, edit_heavy, step):
    name = f"k{step[:2]}_{uuid.uuid4().hex[:6]}"
    make_datastack(engine, name, edit_heavy)
    load_dataset(engine, name, edit_heavy)
    when = edit_heavy.end
    params = sync_parameters(engine, "complete", name, timestamp=when.isoformat(), chunk_rows=500)
    params["roots_per_chunk"] = 10
    with broker_settings(database_url, BROKERS["rabbitmq"]) as env:
        first = Worker(env, concurrency=1)
        try:
            run_id = submit(engine, "complete", params, datastack=name)
            _kill_when(engine, run_id, step, 2)
        finally:
            first.kill()
        at_kill = runs.get_run(engine, run_id)
        assert not at_kill.done, "the run ended before the kill"
        second = Worker(env, concurrency=2)
        try:
            run = wait_for(engine, run_id, timeout=180)
        finally:
            second.stop()
    assert run.state == "SUCCESS", run.errors
    oracle = Oracle(edit_heavy.directory)
    for table in ("synapses", "cells"):
        assert_same_rows(read_version(engine, name, 1, table), oracle.table_at(table, when))
    catalog.drop_datastack(engine, name)


def test_postgres_restart_mid_run_the_run_retries_and_completes(tmp_path, edit_heavy):
    """On a PostgreSQL of its own (embedded, so other tests keep their server): restart it
    while a complete run is merging; tasks retry with backoff and the version is exact."""
    from sqlalchemy.exc import OperationalError

    from matengine.db import embedded
    from matengine.db.connection import get_engine

    home = tmp_path / "pg"
    url = embedded.start(home)
    eng = get_engine(url)
    try:
        name = f"rs_{uuid.uuid4().hex[:6]}"
        make_datastack(eng, name, edit_heavy)
        load_dataset(eng, name, edit_heavy)
        when = edit_heavy.end
        params = sync_parameters(eng, "complete", name, timestamp=when.isoformat(), chunk_rows=500)
        with broker_settings(url, BROKERS["redis"]) as env:
            worker = Worker(env, concurrency=2)
            try:
                run_id = submit(eng, "complete", params, datastack=name)
                _kill_when(eng, run_id, "merge", 2)
                assert not runs.get_run(eng, run_id).done, "the run ended before the restart"
                assert embedded.stop(home)
                embedded.start(home)

                def finished():
                    try:
                        return runs.get_run(eng, run_id).done
                    except OperationalError:
                        return False

                try:
                    wait_until(finished, timeout=120, poll=0.5)
                except TimeoutError:
                    run = runs.get_run(eng, run_id)
                    err = worker.log_tail()
                    raise AssertionError(f"{run.state} {run.errors} {run.steps} {err}") from None
            finally:
                worker.stop()
        run = runs.get_run(eng, run_id)
        assert run.state == "SUCCESS", run.errors
        oracle = Oracle(edit_heavy.directory)
        for table in ("synapses", "cells"):
            assert_same_rows(read_version(eng, name, 1, table), oracle.table_at(table, when))
    finally:
        eng.dispose()
        embedded.stop(home)


def test_worker_killed_mid_incremental_build_leaves_published_versions_and_resumes_exactly(
    engine, database_url, edit_heavy
):
    """Version 2 is built from version 1's store head; a SIGKILL mid-merge leaves version 1
    exactly as it was (it is read while the build is dead), and the resumed build is exact."""
    from .helpers import run_inline

    name = f"ki_{uuid.uuid4().hex[:6]}"
    make_datastack(engine, name, edit_heavy)
    load_dataset(engine, name, edit_heavy)
    edits = sorted(edit_heavy.edit_timestamps)
    t1, t2 = edits[100], edit_heavy.end
    oracle = Oracle(edit_heavy.directory)
    run_inline(
        engine,
        "complete",
        sync_parameters(engine, "complete", name, timestamp=t1.isoformat()),
        datastack=name,
    )
    params = sync_parameters(engine, "complete", name, timestamp=t2.isoformat(), chunk_rows=500)
    params["roots_per_chunk"] = 10
    with broker_settings(database_url, BROKERS["redis"]) as env:
        first = Worker(env, concurrency=1)
        try:
            run_id = submit(engine, "complete", params, datastack=name)
            _kill_when(engine, run_id, "merge", 2)
        finally:
            first.kill()
        assert not runs.get_run(engine, run_id).done, "the run ended before the kill"
        for table in ("synapses", "cells"):
            assert_same_rows(read_version(engine, name, 1, table), oracle.table_at(table, t1))
        second = Worker(env, concurrency=2)
        try:
            run = wait_for(engine, run_id, timeout=180)
        finally:
            second.stop()
    assert run.state == "SUCCESS", run.errors
    assert run.result["merge:synapses"]["written"] < run.result["merge:synapses"]["rows"]
    for version, when in ((1, t1), (2, t2)):
        for table in ("synapses", "cells"):
            assert_same_rows(read_version(engine, name, version, table), oracle.table_at(table, when))
    catalog.drop_datastack(engine, name)
