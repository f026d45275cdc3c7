"""A small ingest run (a few posted rows on a large table) touches the pending rows only: it
finds them in the partial index that holds them even while the table's statistics still
count every row as pending (right after a large ingest, before the table is analyzed again),
and it counts the rows outside the segmentation it ingests instead of re-counting the table."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

from matengine import catalog
from matengine.annotations import insert_annotations
from matengine.workflows import runs
from matengine.workflows.engine import StepContext
from matengine.workflows.submit import sync_parameters
from matengine.workflows.sync_steps import IngestStep, count_pending, pending_ids

from .helpers import make_datastack, run_inline

ONE_BOX = {"x": [None, None], "y": [None, None]}


@pytest.fixture
def ingested(engine, synth):
    """Synapses uploaded without ids (the upload's ANALYZE sees every row pending), then all
    ingested by one run, with autovacuum off for the table so its statistics stay as stale as
    they are in the minute after a large ingest."""
    name = f"small_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    _upload(engine, name, synth, with_ids=False)
    seg_q = catalog.get_table(engine, name, "synapses").names.segmentation_q
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {seg_q} SET (autovacuum_enabled = false)"))
    run_inline(engine, "ingest", _ingest_params(engine, name, synth), datastack=name, table="synapses")
    yield name
    catalog.drop_datastack(engine, name)


def _upload(engine, datastack: str, synth, *, with_ids: bool) -> None:
    """The synthetic synapses into ``datastack``: with their supervoxel and root ids, or
    without (every row pending)."""
    folder = synth.directory / "synapses"
    mapping = json.loads((folder / "column_mapping.json").read_text())
    if not with_ids:
        mapping = {k: v for k, v in mapping.items() if k not in ("sv_ids_ordered", "root_ids_ordered")}
    params = {
        "datastack": datastack,
        "table": "synapses",
        "schema": "synapse",
        "source": f"file://{folder}",
        "column_mapping": mapping,
        "roots_timestamp": synth.initial_timestamp.isoformat() if with_ids else None,
        "created": synth.start.isoformat(),
    }
    run_inline(engine, "bulk_upload", params, datastack=datastack, table="synapses")


def _ingest_params(engine, datastack: str, synth) -> dict:
    return sync_parameters(
        engine, "ingest", datastack, table="synapses", timestamp=synth.initial_timestamp.isoformat()
    )


def _posted(synth, n: int, outside: int = 0) -> list[dict]:
    """``n`` synapses at points of the dataset, the last ``outside`` of them far outside the
    volume (no supervoxel there)."""
    import numpy as np

    folder = synth.directory / "synapses"
    pts = {k: np.load(folder / f"{k}_coords.npy") for k in ("presyn", "center", "postsyn")}
    rows = []
    for i in range(n):
        far = i >= n - outside
        rows.append(
            {
                p: {"position": [1e7, 1e7, 1e7] if far else [float(v) for v in pts[k][i]]}
                for p, k in (("pre_pt", "presyn"), ("ctr_pt", "center"), ("post_pt", "postsyn"))
            }
            | {"size": 1.0}
        )
    return rows


def _scans(conn, *tables_q: str) -> dict[str, tuple[int, int]]:
    """(sequential scans, index scans) of each table not yet flushed to the statistics by this
    connection's server process: since its last flush, which happens only outside a
    transaction, so the difference of two readings in one transaction is that of the
    statements in between."""
    out = {}
    for q in tables_q:
        seq, idx = conn.execute(
            text(
                "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables "
                "WHERE relid = CAST(:t AS regclass)"
            ),
            {"t": q},
        ).one()
        out[q] = (int(seq), int(idx))
    return out


def test_statistics_still_count_every_row_pending_after_the_large_ingest(engine, ingested):
    table = catalog.get_table(engine, ingested, "synapses")
    with engine.connect() as conn:
        estimated = conn.execute(
            text(
                "SELECT null_frac FROM pg_stats WHERE schemaname = :s AND tablename = :t "
                "AND attname = 'pre_pt_root_id'"
            ),
            {"s": table.names.datastack, "t": table.names.segmentation},
        ).scalar_one()
        assert estimated == 1.0  # the case the next tests are about
        assert count_pending(conn, table) == 0


def test_a_small_ingest_reads_neither_table_whole_while_statistics_count_every_row_pending(
    engine, ingested, synth
):
    first = insert_annotations(engine, ingested, "synapses", _posted(synth, 5))
    table = catalog.get_table(engine, ingested, "synapses")
    names = table.names
    run_id = runs.create_run(
        engine, "ingest", _ingest_params(engine, ingested, synth), datastack=ingested, table_name="synapses"
    )
    try:
        step = IngestStep(ingested, "synapses", synth.initial_timestamp.isoformat())
        ctx = StepContext(engine, runs.get_run_header(engine, run_id), 0)
        assert step.plan(ctx) == [{"ids": sorted(first)}]  # one chunk, naming the rows
        second = insert_annotations(engine, ingested, "synapses", _posted(synth, 4))
        tables = (names.segmentation_q, names.live_q)
        with engine.begin() as conn:
            before = _scans(conn, *tables)
            assert count_pending(conn, table, up_to=1000) == 9
            assert pending_ids(conn, table).tolist() == sorted(first + second)
            assert step.run_chunk(ctx, conn, {"ids": sorted(first)}) == 5
            assert step.run_chunk(ctx, conn, ONE_BOX) == 4  # every row still pending
            after = _scans(conn, *tables)
        seq = {q: after[q][0] - before[q][0] for q in tables}
        idx = {q: after[q][1] - before[q][1] for q in tables}
        assert seq == {q: 0 for q in tables}, (before, after)
        assert idx[names.segmentation_q] > 0 and idx[names.live_q] > 0  # found through indexes
    finally:
        runs.finish_run(engine, run_id, "CANCELLED")


def test_a_small_ingest_run_plans_one_chunk_and_ingests_just_the_posted_rows(engine, ingested, synth):
    ids = insert_annotations(engine, ingested, "synapses", _posted(synth, 7))
    run = run_inline(
        engine, "ingest", _ingest_params(engine, ingested, synth), datastack=ingested, table="synapses"
    )
    assert run.rows_done == 7
    assert [s["chunks_total"] for s in run.steps] == [1]
    table = catalog.get_table(engine, ingested, "synapses")
    with engine.connect() as conn:
        assert count_pending(conn, table) == 0
        missing = conn.execute(
            text(
                f"SELECT count(*) FROM {table.names.segmentation_q} WHERE id = ANY(:i) "
                "AND (pre_pt_root_id IS NULL OR post_pt_root_id IS NULL)"
            ),
            {"i": ids},
        ).scalar_one()
    assert missing == 0


def test_an_ingest_run_reports_the_rows_it_found_outside_the_segmentation(engine, ingested, synth):
    insert_annotations(engine, ingested, "synapses", _posted(synth, 6, outside=2))
    run = run_inline(
        engine, "ingest", _ingest_params(engine, ingested, synth), datastack=ingested, table="synapses"
    )
    assert run.result["ingest:synapses"] == {"rows_without_segmentation": 2}
    assert run.steps[0]["result"] == {"ingest:synapses": {"rows_without_segmentation": 2}}
    # the next run counts its own rows only
    insert_annotations(engine, ingested, "synapses", _posted(synth, 3))
    run = run_inline(
        engine, "ingest", _ingest_params(engine, ingested, synth), datastack=ingested, table="synapses"
    )
    assert run.result["ingest:synapses"] == {"rows_without_segmentation": 0}


def test_waiting_for_an_in_process_run_ends_when_the_run_does_not_at_the_next_poll(engine, ingested, synth):
    import threading

    from matengine.config import get_settings
    from matengine.workflows.submit import submit, wait_for

    settings = get_settings()
    if settings.broker_url:
        pytest.skip("runs go to Celery workers here")
    insert_annotations(engine, ingested, "synapses", _posted(synth, 3))
    run_id = submit(
        engine, "ingest", _ingest_params(engine, ingested, synth), datastack=ingested, table="synapses"
    )
    got: list[runs.Run] = []
    waiter = threading.Thread(target=lambda: got.append(wait_for(engine, run_id, poll=3600)), daemon=True)
    waiter.start()
    waiter.join(120)  # an hour's poll, unless the run's end wakes it
    assert got and got[0].state == "SUCCESS" and got[0].rows_done == 3


def _pacer_holds(engine) -> int:
    from matengine.db import writeback

    folder = writeback.database_directory(engine)
    assert folder is not None, "the test server runs on this machine"
    pacer = writeback._pacers.get(folder)
    return 0 if pacer is None else pacer.holds


def test_an_upload_paces_the_writeback_of_its_files_and_an_ingest_does_not(engine, ingested, synth):
    """Bulk writes around the shared buffers (the upload's COPY and index builds) run inside
    :func:`matengine.db.writeback.pacing`; an ingest's updates go through the shared buffers
    and are left to the checkpointer (docs/operations.md, "Live inserts during bulk work")."""
    before = _pacer_holds(engine)
    insert_annotations(engine, ingested, "synapses", _posted(synth, 3))
    params = _ingest_params(engine, ingested, synth)
    run_inline(engine, "ingest", params, datastack=ingested, table="synapses")
    assert _pacer_holds(engine) == before

    name = f"paced_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    try:
        _upload(engine, name, synth, with_ids=True)
        assert _pacer_holds(engine) > before
    finally:
        catalog.drop_datastack(engine, name)
