"""Workflows on real Celery workers: Redis and RabbitMQ brokers, a worker SIGKILLed mid-run,
two runs on one table at once."""

from __future__ import annotations

import uuid

import pytest

from matengine import catalog
from matengine.errors import Conflict
from matengine.synth.generate import generate_dataset
from matengine.workflows import runs
from matengine.workflows.submit import submit, sync_parameters, wait_for

from .helpers import (
    TABLE_SCHEMAS,
    assert_same_rows,
    make_datastack,
    read_table,
    read_version,
    upload_params,
)
from .workers import BROKERS, Worker, broker_settings, wait_until


@pytest.mark.parametrize("broker", list(BROKERS))
def test_upload_and_complete_run_on_broker(engine, database_url, synth, oracle, broker):
    name = f"cel_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    with broker_settings(database_url, BROKERS[broker]) as env:
        worker = Worker(env)
        try:
            for table in TABLE_SCHEMAS:
                roots = synth.initial_timestamp.isoformat() if table == "synapses" else None
                params = upload_params(name, synth.directory, table, synth.start.isoformat(), roots)
                run_id = submit(engine, "bulk_upload", params, datastack=name, table=table)
                assert wait_for(engine, run_id, timeout=60).state == "SUCCESS"
            when = synth.edit_timestamps[30]
            ingest = sync_parameters(engine, "ingest", name, timestamp=synth.start.isoformat())
            assert (
                wait_for(engine, submit(engine, "ingest", ingest, datastack=name), timeout=60).state
                == "SUCCESS"
            )
            params = sync_parameters(engine, "complete", name, timestamp=when.isoformat(), chunk_rows=500)
            run = wait_for(engine, submit(engine, "complete", params, datastack=name), timeout=90)
            assert run.state == "SUCCESS", run.errors
            assert run.chunks_done == run.chunks_total > 5
        finally:
            worker.stop()
    for table in TABLE_SCHEMAS:
        assert_same_rows(read_version(engine, name, 1, table), oracle.table_at(table, when))
    catalog.drop_datastack(engine, name)


@pytest.fixture(scope="module")
def big_synth(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("big"), synapses=200_000, cells=10, edits=20, seed=7)


def test_worker_killed_mid_upload_run_completes_exactly(engine, database_url, big_synth):
    from matengine.synth.oracle import Oracle

    name = f"kill_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, big_synth)
    params = upload_params(
        name,
        big_synth.directory,
        "synapses",
        big_synth.start.isoformat(),
        big_synth.initial_timestamp.isoformat(),
    )
    params["chunk_rows"] = 2_000  # 100 chunks
    with broker_settings(database_url, BROKERS["rabbitmq"]) as env:
        first = Worker(env, concurrency=1)
        try:
            run_id = submit(engine, "bulk_upload", params, datastack=name, table="synapses")
            wait_until(lambda: runs.get_run(engine, run_id).chunks_done >= 5, timeout=60)
        finally:
            first.kill()
        at_kill = runs.get_run(engine, run_id)
        assert at_kill.chunks_done < at_kill.chunks_total, "the run ended before the kill"
        second = Worker(env, concurrency=2)
        try:
            run = wait_for(engine, run_id, timeout=120)
        finally:
            second.stop()
    assert run.state == "SUCCESS", run.errors
    table = catalog.get_table(engine, name, "synapses")
    got = read_table(engine, table.names.live_q, "synapse", table.names.segmentation_q)
    want = Oracle(big_synth.directory).base_rows("synapses")
    order = want["id"].argsort()
    assert_same_rows(got, {k: v[order] for k, v in want.items()})  # none lost, none doubled
    catalog.drop_datastack(engine, name)


def test_second_run_on_same_table_is_refused(engine, datastack):
    catalog.create_table(engine, datastack, "syn", schema="synapse")
    first = runs.create_run(engine, "ingest", {"tables": ["syn"]}, datastack=datastack, table_name="syn")
    with pytest.raises(Conflict, match=f"run {first} is still active"):
        runs.create_run(engine, "ingest", {"tables": ["syn"]}, datastack=datastack, table_name="syn")
    with pytest.raises(Conflict):  # a datastack-wide run needs every table free
        runs.create_run(engine, "complete", {"tables": ["syn"]}, datastack=datastack)
    runs.finish_run(engine, first, "CANCELLED")
    second = runs.create_run(engine, "complete", {"tables": ["syn"]}, datastack=datastack)
    runs.finish_run(engine, second, "CANCELLED")
