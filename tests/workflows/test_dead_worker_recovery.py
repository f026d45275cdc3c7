"""Dead-worker recovery on Redis with its default visibility timeout (900 s, so the broker
alone would hand a killed worker's messages back only after a quarter of an hour): a worker
SIGKILLed mid bulk upload, mid update-roots and mid merge; a new worker, or the surviving
worker of two, finishes the run within 60 s of the kill, equal to the oracle.

The first test uses every default a user gets (heartbeat 5 s, dead after 20 s, reaper every
5 s); the others lower those three to stay fast. Each kill lands while the worker holds a
chunk of the step that is not done (its lease says so).
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from matengine import catalog
from matengine.config import Settings
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle
from matengine.timeutil import utcnow
from matengine.workflows import runs
from matengine.workflows.submit import submit, sync_parameters, wait_for

from .helpers import assert_same_rows, load_dataset, make_datastack, read_table, read_version, upload_params
from .workers import BROKERS, Worker, broker_settings, wait_until

FAST: dict[str, object] = {"worker_heartbeat": 0.5, "worker_dead_after": 3, "reaper_interval": 0.5}
DEFAULTS: dict[str, object] = {}
RECOVERY_BOUND = 60.0  # seconds from the kill to the run's end


def test_recovery_settings_have_the_documented_defaults():
    s = Settings()
    assert (s.worker_heartbeat, s.worker_dead_after, s.reaper_interval, s.visibility_timeout) == (
        5.0,
        20.0,
        5.0,
        900,
    )


@pytest.fixture(scope="module")
def edits(tmp_path_factory):
    now = utcnow().replace(microsecond=0)
    return generate_dataset(
        tmp_path_factory.mktemp("recover"),
        synapses=8_000,
        cells=10,
        supervoxels=2000,
        edits=300,
        seed=17,
        start=now - timedelta(days=2),
        span=timedelta(days=1),
    )


def _leases_of(engine, run_id: int, worker: str) -> list[tuple[str, list]]:
    with engine.connect() as conn:
        return [
            (r.task, list(r.args))
            for r in conn.execute(
                text("SELECT task, args FROM matengine.task_leases WHERE run_id = :r AND worker = :w"),
                {"r": run_id, "w": worker},
            )
        ]


def _reach(engine, run_id: int, step_prefix: str, chunks: int) -> None:
    def reached():
        run = runs.get_run(engine, run_id)
        if run.done:
            raise AssertionError(f"the run ended before the kill: {run.state} {run.errors}")
        return any(s["chunks_done"] >= chunks for s in run.steps if s["key"].startswith(step_prefix))

    wait_until(reached, timeout=90, poll=0.01)


def _kill_holding_a_chunk(engine, run_id: int, worker: Worker, step_prefix: str) -> float:
    """SIGKILL ``worker`` while it holds an unfinished chunk of the step; the kill's time."""

    def holding():
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT 1 FROM matengine.task_leases l JOIN matengine.run_steps s "
                    " ON s.run_id = l.run_id AND s.step_index = (l.args ->> 1)::int "
                    "WHERE l.run_id = :r AND l.worker = :w AND l.task = 'matengine.run_chunk' "
                    " AND s.key LIKE :k AND NOT EXISTS (SELECT 1 FROM matengine.run_chunks c "
                    "  WHERE c.run_id = l.run_id AND c.step_index = s.step_index "
                    "  AND c.chunk = (l.args ->> 2)::int)"
                ),
                {"r": run_id, "w": worker.node, "k": step_prefix + "%"},
            ).first()

    try:
        wait_until(holding, timeout=30, poll=0.005)
    except TimeoutError:
        run = runs.get_run(engine, run_id)
        steps = [(s["key"], s["chunks_done"], s["chunks_total"]) for s in run.steps]
        raise AssertionError(
            f"{worker.node} never held a chunk of {step_prefix}: {run.state} {steps}"
        ) from None
    worker.kill()
    return time.monotonic()


def _finish(engine, run_id: int, killed_at: float) -> runs.Run:
    run = wait_for(engine, run_id, timeout=RECOVERY_BOUND + 30, poll=0.2)
    took = time.monotonic() - killed_at
    assert run.state == "SUCCESS", run.errors
    assert took < RECOVERY_BOUND, f"the run ended {took:.1f} s after the kill"
    return run


def _recovered(engine, run_id: int, dead: Worker, held: list[tuple[str, list]], killed_at: float) -> None:
    """Every chunk the dead worker held is done, within the bound, by someone else."""

    def done():
        if _leases_of(engine, run_id, dead.node):
            return False
        with engine.connect() as conn:
            for task, args in held:
                if (
                    task == "matengine.run_chunk"
                    and not conn.execute(
                        text(
                            "SELECT 1 FROM matengine.run_chunks "
                            "WHERE run_id = :r AND step_index = :i AND chunk = :c"
                        ),
                        {"r": args[0], "i": args[1], "c": args[2]},
                    ).first()
                ):
                    return False
        return True

    wait_until(done, timeout=RECOVERY_BOUND + 5, poll=0.1)
    took = time.monotonic() - killed_at
    assert took < RECOVERY_BOUND, f"the dead worker's chunks were done {took:.1f} s after the kill"


def _resent(engine, run_id: int, dead: Worker, killed_at: float) -> None:
    """The dead worker's tasks were sent again (its leases are gone) within the bound; they
    wait at the back of the queue."""
    wait_until(lambda: not _leases_of(engine, run_id, dead.node), timeout=RECOVERY_BOUND + 5, poll=0.05)
    took = time.monotonic() - killed_at
    assert took < RECOVERY_BOUND, f"the dead worker's tasks were sent again {took:.1f} s after the kill"


def _kill(engine, run_id: int, worker: Worker, step: str) -> tuple[float, list]:
    _reach(engine, run_id, step, 1)
    killed_at = _kill_holding_a_chunk(engine, run_id, worker, step)
    held = _leases_of(engine, run_id, worker.node)
    assert held, "the killed worker held no task"
    return killed_at, held


def _loaded(engine, edits, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    make_datastack(engine, name, edits)
    load_dataset(engine, name, edits)
    return name


def _assert_version_exact(engine, name: str, edits) -> None:
    oracle = Oracle(edits.directory)
    for table in ("synapses", "cells"):
        assert_same_rows(read_version(engine, name, 1, table), oracle.table_at(table, edits.end))


def _complete_params(engine, name: str, edits, roots_per_chunk: int) -> dict:
    params = sync_parameters(engine, "complete", name, timestamp=edits.end.isoformat(), chunk_rows=100)
    params["roots_per_chunk"] = roots_per_chunk
    return params


def test_default_settings_new_worker_finishes_within_a_minute_of_a_kill_mid_merge(
    engine, database_url, edits
):
    """Nothing tuned: Redis's 900 s visibility timeout, heartbeats every 5 s, dead after 20 s."""
    name = _loaded(engine, edits, "rdef")
    with broker_settings(database_url, BROKERS["redis"], DEFAULTS) as env:
        doomed, fresh = Worker(env, concurrency=2), None
        try:
            run_id = submit(engine, "complete", _complete_params(engine, name, edits, 8), datastack=name)
            killed_at, _ = _kill(engine, run_id, doomed, "merge")
            fresh = Worker(env, concurrency=2)
            _finish(engine, run_id, killed_at)
            assert _leases_of(engine, run_id, doomed.node) == []
        finally:
            doomed.kill()
            if fresh is not None:
                fresh.stop()
    _assert_version_exact(engine, name, edits)
    catalog.drop_datastack(engine, name)


def test_workers_killed_mid_update_roots_and_mid_merge_survivors_and_new_workers_finish(
    engine, database_url, edits
):
    """Two workers; kill one mid update-roots (the survivor takes its chunks), kill the
    survivor too (two new workers take over), then kill one of those mid merge."""
    name = _loaded(engine, edits, "rcur")
    with broker_settings(database_url, BROKERS["redis"], FAST) as env:
        workers = [Worker(env, concurrency=1), Worker(env, concurrency=1)]
        try:
            run_id = submit(engine, "complete", _complete_params(engine, name, edits, 2), datastack=name)
            killed_at, held = _kill(engine, run_id, workers[0], "update_roots")
            _recovered(engine, run_id, workers[0], held, killed_at)  # by the survivor
            killed_at, held = _kill(engine, run_id, workers[1], "update_roots")
            workers += [Worker(env, concurrency=1), Worker(env, concurrency=1)]
            _recovered(engine, run_id, workers[1], held, killed_at)  # by new workers
            killed_at, held = _kill(engine, run_id, workers[2], "merge")
            _recovered(engine, run_id, workers[2], held, killed_at)  # by the survivor
            _finish(engine, run_id, killed_at)
        finally:
            for w in workers:
                w.stop()
    _assert_version_exact(engine, name, edits)
    catalog.drop_datastack(engine, name)


def test_workers_killed_mid_bulk_upload_none_lost_none_doubled(engine, database_url, edits):
    """One worker, killed mid upload (two new workers take its chunks), then one of those
    (the survivor takes its chunks and finishes)."""
    name = f"ru_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, edits)
    params = upload_params(
        name, edits.directory, "synapses", edits.start.isoformat(), edits.initial_timestamp.isoformat()
    )
    params["chunk_rows"] = 25  # 320 chunks
    with broker_settings(database_url, BROKERS["redis"], FAST) as env:
        workers = [Worker(env, concurrency=1)]
        try:
            run_id = submit(engine, "bulk_upload", params, datastack=name, table="synapses")
            first_kill, _ = _kill(engine, run_id, workers[0], "upload")
            workers += [Worker(env, concurrency=1), Worker(env, concurrency=1)]
            _resent(engine, run_id, workers[0], first_kill)  # by the new workers' reapers
            killed_at, held = _kill(engine, run_id, workers[1], "upload")
            _recovered(engine, run_id, workers[1], held, killed_at)  # by the survivor
            _finish(engine, run_id, first_kill)
        finally:
            for w in workers:
                w.stop()
    table = catalog.get_table(engine, name, "synapses")
    got = read_table(engine, table.names.live_q, "synapse", table.names.segmentation_q)
    want = Oracle(edits.directory).base_rows("synapses")
    order = want["id"].argsort()
    assert_same_rows(got, {k: v[order] for k, v in want.items()})
    catalog.drop_datastack(engine, name)
