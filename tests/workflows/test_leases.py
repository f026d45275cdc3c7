"""Leases, heartbeats, the reaper and stalled runs, on the real database (the Celery side is
exercised in test_dead_worker_recovery.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text

from matengine import catalog
from matengine.errors import Conflict
from matengine.workflows import leases, runs
from matengine.workflows.submit import wait_for


def _queue() -> str:
    return f"q_{uuid.uuid4().hex[:8]}"


def _age(engine, table: str, where: str, seconds: int, **params) -> None:
    """Move a row's times into the past, as if that much time had passed."""
    cols = {"workers": ("heartbeat", "started"), "workflow_runs": ("created", "started", "heartbeat")}[table]
    sets = ", ".join(f"{c} = {c} - make_interval(secs => :s)" for c in cols)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE matengine.{table} SET {sets} WHERE {where}"), {"s": seconds, **params})


def _lease(engine, task_id: str, worker: str, queue: str, run_id: int, chunk: int) -> None:
    leases.take(
        engine,
        task_id=task_id,
        attempt=0,
        worker=worker,
        queue=queue,
        task="matengine.run_chunk",
        args=[run_id, 0, chunk],
    )


@pytest.fixture
def active_run(engine, datastack):
    run_id = runs.create_run(engine, "ingest", {"tables": []}, datastack=datastack)
    yield run_id
    runs.finish_run(engine, run_id, "CANCELLED")


def test_reaper_resends_exactly_the_dead_workers_tasks_once(engine, active_run):
    q = _queue()
    leases.register(engine, f"{q}.alive", queue=q)
    leases.register(engine, f"{q}.dead", queue=q)
    _lease(engine, f"{q}-t1", f"{q}.alive", q, active_run, 1)
    _lease(engine, f"{q}-t2", f"{q}.dead", q, active_run, 2)
    _lease(engine, f"{q}-t3", f"{q}.never-registered", q, active_run, 3)
    _age(engine, "workers", "name = :n", 60, n=f"{q}.dead")
    with engine.begin() as conn:  # the dead ones' leases are as old as their silence
        conn.execute(
            text(
                "UPDATE matengine.task_leases SET received = received - interval '60 s' "
                "WHERE queue = :q AND worker <> :alive"
            ),
            {"q": q, "alive": f"{q}.alive"},
        )
    sent: list = []
    got = leases.reap(engine, q, lambda task, args: sent.append((task, args)))
    assert sorted(sent) == [
        ("matengine.run_chunk", [active_run, 0, 2]),
        ("matengine.run_chunk", [active_run, 0, 3]),
    ]
    assert sorted(r.worker for r in got) == [f"{q}.dead", f"{q}.never-registered"]
    assert leases.reap(engine, q, lambda task, args: sent.append((task, args))) == []  # once only
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT task_id FROM matengine.task_leases WHERE queue = :q"), {"q": q}
        ).scalars()
        assert list(left) == [f"{q}-t1"]


def test_a_failed_send_keeps_the_lease_for_the_next_reaper(engine, active_run):
    q = _queue()
    _lease(engine, f"{q}-t", f"{q}.gone", q, active_run, 1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE matengine.task_leases SET received = received - interval '60 s' WHERE queue = :q"),
            {"q": q},
        )

    def broker_down(task, args):
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        leases.reap(engine, q, broker_down)
    sent: list = []
    leases.reap(engine, q, lambda task, args: sent.append(args))
    assert sent == [[active_run, 0, 1]]


def test_leases_of_a_restarted_worker_count_as_dead(engine, active_run):
    q = _queue()
    name = f"{q}.fixed-name"
    leases.register(engine, name, queue=q)
    _lease(engine, f"{q}-t", name, q, active_run, 1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE matengine.task_leases SET received = received - interval '60 s' WHERE queue = :q"),
            {"q": q},
        )
    leases.register(engine, name, queue=q)  # the same name, a new process
    sent: list = []
    leases.reap(engine, q, lambda task, args: sent.append(args))
    assert sent == [[active_run, 0, 1]]


def test_leases_of_ended_runs_are_dropped_not_sent(engine, datastack):
    q = _queue()
    run_id = runs.create_run(engine, "ingest", {"tables": []}, datastack=datastack)
    runs.finish_run(engine, run_id, "CANCELLED")
    _lease(engine, f"{q}-t", f"{q}.gone", q, run_id, 1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE matengine.task_leases SET received = received - interval '60 s' WHERE queue = :q"),
            {"q": q},
        )
    sent: list = []
    leases.reap(engine, q, lambda task, args: sent.append(args))
    assert sent == []
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM matengine.task_leases WHERE queue = :q"), {"q": q}
            ).scalar()
            == 0
        )


def test_a_run_with_no_live_worker_on_its_queue_is_stalled_with_the_reason(engine, datastack):
    q = _queue()
    run_id = runs.create_run(engine, "ingest", {"tables": []}, datastack=datastack, queue=q)
    try:
        assert runs.get_run(engine, run_id).stalled is None  # just created: not yet
        _age(engine, "workflow_runs", "id = :r", 120, r=run_id)
        stalled = runs.get_run(engine, run_id).stalled
        assert stalled is not None
        assert stalled.startswith(f"no live worker on queue {q!r} (none seen); no progress since ")
        assert stalled.endswith("start one with `matengine worker`")
        leases.register(engine, f"{q}.1@h", queue=q)
        assert runs.get_run(engine, run_id).stalled is None  # a worker is back
        _age(engine, "workers", "name = :n", 120, n=f"{q}.1@h")
        assert "no live worker" in runs.get_run(engine, run_id).stalled
        assert "last seen" in runs.get_run(engine, run_id).stalled
    finally:
        runs.finish_run(engine, run_id, "CANCELLED")
    assert runs.get_run(engine, run_id).stalled is None  # ended runs are never stalled


def test_an_in_process_run_whose_runner_died_is_stalled_and_the_next_run_says_so(engine, datastack):
    catalog.create_table(engine, datastack, "syn", schema="synapse")
    run_id = runs.create_run(engine, "ingest", {"tables": ["syn"]}, datastack=datastack, table_name="syn")
    try:
        _age(engine, "workflow_runs", "id = :r", 120, r=run_id)
        stalled = runs.get_run(engine, run_id).stalled
        assert stalled is not None and stalled.startswith("its in-process runner is gone (none seen)")
        assert stalled.endswith(
            f"`matengine resume {run_id}` continues it, `matengine cancel {run_id}` ends it"
        )
        with pytest.raises(Conflict) as refused:
            runs.create_run(engine, "ingest", {"tables": ["syn"]}, datastack=datastack, table_name="syn")
        assert f"run {run_id} is still active on it (stalled, its in-process runner is gone" in str(
            refused.value
        )
    finally:
        runs.finish_run(engine, run_id, "CANCELLED")


def test_a_busy_run_names_the_real_cancel_command(engine, datastack):
    catalog.create_table(engine, datastack, "syn", schema="synapse")
    run_id = runs.create_run(engine, "ingest", {"tables": ["syn"]}, datastack=datastack, table_name="syn")
    try:
        with pytest.raises(Conflict, match=rf"wait for it, or `matengine cancel {run_id}`"):
            runs.create_run(engine, "ingest", {"tables": ["syn"]}, datastack=datastack, table_name="syn")
    finally:
        runs.finish_run(engine, run_id, "CANCELLED")


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {"MATENGINE_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "matengine", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_detached_in_process_run_goes_on_after_the_command_returned(engine, database_url, loaded, synth):
    """Without a broker, ``--detach`` starts the run in a process of its own: the command
    returns at once, the run completes, and it never shows as stalled on the way."""
    when = synth.edit_timestamps[10].isoformat()
    done = _cli(database_url, "update-roots", loaded, "--timestamp", when, "--detach", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    seen_stalled = []
    run = wait_for(engine, run_id, timeout=120, on_progress=lambda r: seen_stalled.append(r.stalled))
    assert run.state == "SUCCESS", run.errors
    assert set(seen_stalled) == {None}
    with engine.connect() as conn:
        runner = conn.execute(
            text("SELECT pid FROM matengine.workers WHERE run_id = :r"), {"r": run_id}
        ).scalar()
    assert runner is not None  # its own runner heartbeat, from a process of its own


def test_runs_command_shows_the_stall(engine, database_url, datastack):
    run_id = runs.create_run(engine, "ingest", {"tables": []}, datastack=datastack, queue=_queue())
    try:
        _age(engine, "workflow_runs", "id = :r", 120, r=run_id)
        shown = _cli(database_url, "runs", str(run_id), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["stalled"].startswith("no live worker on queue")
    finally:
        runs.finish_run(engine, run_id, "CANCELLED")


def test_stalled_runs_show_on_the_dashboard_and_in_metrics(engine, datastack):
    from matengine.api.dashboard import RowCounts, dashboard_state
    from matengine.api.metrics import DatabaseCollector
    from matengine.auth import OPEN_PRINCIPAL

    run_id = runs.create_run(engine, "ingest", {"tables": []}, datastack=datastack, queue=_queue())
    try:
        _age(engine, "workflow_runs", "id = :r", 120, r=run_id)
        shown = next(
            r for r in dashboard_state(engine, OPEN_PRINCIPAL, RowCounts())["runs"] if r["id"] == run_id
        )
        assert shown["stalled"].startswith("no live worker on queue")
        family = next(f for f in DatabaseCollector(engine).collect() if f.name == "matengine_run_stalled")
        sample = next(s for s in family.samples if s.labels["run_id"] == str(run_id))
        assert (sample.labels["reason"], sample.labels["kind"], sample.value) == ("no_worker", "ingest", 1)
    finally:
        runs.finish_run(engine, run_id, "CANCELLED")


def test_celery_beat_reaps_the_leases_of_dead_workers(engine, database_url, active_run, tmp_path):
    """With every worker dead, beat alone sends their tasks again (they wait in the queue)."""
    import os
    import signal
    import time

    from .workers import BROKERS, worker_env

    q = _queue()
    _lease(engine, f"{q}-t", f"{q}.dead", q, active_run, 1)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE matengine.task_leases SET received = received - interval '60 s' WHERE queue = :q"),
            {"q": q},
        )
    env = worker_env(database_url, BROKERS["redis"], q, reaper_interval=0.5)
    beat = subprocess.Popen(
        [sys.executable, "-m", "matengine", "beat", "--schedule-file", str(tmp_path / "beat")],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        left = 1
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            with engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM matengine.task_leases WHERE queue = :q"), {"q": q}
                ).scalar()
        assert left == 0, "beat did not re-send the dead worker's task"
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(15)


def test_a_lease_that_could_not_be_written_is_written_by_the_next_beat_while_the_task_is_held(
    engine, active_run, monkeypatch
):
    """PostgreSQL unreachable as a run task arrives: the lease is kept in the worker and the
    heartbeat writes it once the database answers, for tasks the worker still holds only."""
    from types import SimpleNamespace

    from celery.worker import state

    from matengine import config
    from matengine.workflows import celery_app

    q = _queue()
    held, done = f"{q}-held", f"{q}-done"

    def request(task_id: str, chunk: int):
        return SimpleNamespace(
            id=task_id,
            name="matengine.run_chunk",
            request_dict={"retries": 0},
            hostname=f"{q}.worker",
            args=[active_run, 0, chunk],
        )

    up = dict(config._overrides, queue=q)
    monkeypatch.setattr(config, "_overrides", dict(up, database_url="postgresql://postgres@127.0.0.1:1/x"))
    config.get_settings.cache_clear()  # the database is now a closed port
    try:
        for task_id, chunk in ((held, 1), (done, 2)):
            state.requests[task_id] = request(task_id, chunk)
            celery_app._lease(request=request(task_id, chunk))
        assert celery_app.record_unrecorded_leases() == 0  # still down: kept for later
    finally:
        monkeypatch.setattr(config, "_overrides", up)  # back up (undone after the test)
        config.get_settings.cache_clear()
    state.requests.pop(done)  # this one ran meanwhile: it needs no lease
    try:
        assert celery_app.record_unrecorded_leases() == 1
        assert celery_app.record_unrecorded_leases() == 0  # written once
    finally:
        state.requests.pop(held)
    monkeypatch.undo()
    config.get_settings.cache_clear()
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT task_id, worker, queue, args FROM matengine.task_leases WHERE task_id LIKE :p"),
            {"p": f"{q}-%"},
        ).all()
    assert [tuple(r) for r in rows] == [(held, f"{q}.worker", q, [active_run, 0, 1])]
