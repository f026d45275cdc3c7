"""Every version equals the oracle at its timestamp, row by row, ids included."""

from __future__ import annotations

from datetime import timedelta

from matengine.workflows.submit import sync_parameters

from .helpers import TABLE_SCHEMAS, assert_same_rows, read_table, read_version, run_inline


def test_upload_equals_the_files(engine, loaded, oracle):
    from matengine import catalog

    for table in TABLE_SCHEMAS:
        t = catalog.get_table(engine, loaded, table)
        got = read_table(engine, t.names.live_q, TABLE_SCHEMAS[table], t.names.segmentation_q)
        want = oracle.base_rows(table)
        order = want["id"].argsort()
        # root ids were uploaded for synapses only; cells get theirs from ingest
        cols = {k: v[order] for k, v in want.items() if not k.endswith("_root_id")}
        assert_same_rows({k: got[k] for k in cols}, cols)


def test_complete_at_several_times_equals_oracle(engine, loaded, synth, oracle):
    edits = sorted(synth.edit_timestamps)
    one_us = timedelta(microseconds=1)
    times = [edits[10] - one_us, edits[10], edits[40], edits[-1] + timedelta(days=1)]
    for number, when in enumerate(times, start=1):
        params = sync_parameters(engine, "complete", loaded, timestamp=when.isoformat(),
                                 chunk_rows=900)
        run = run_inline(engine, "complete", params, datastack=loaded)
        assert run.result["version"] == number
        for table in TABLE_SCHEMAS:
            assert_same_rows(read_version(engine, loaded, number, table),
                             oracle.table_at(table, when))


def test_update_roots_that_died_half_way_is_repaired_by_the_next_run(engine, loaded, synth,
                                                                     oracle):
    """Rows left at the dead run's target T1 and rows still at L are both brought to T2."""
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows import engine as wf
    from matengine.workflows import runs

    edits = sorted(synth.edit_timestamps)
    t1, t2 = edits[50], edits[30]  # the next run even goes to an earlier time than the dead one
    params = sync_parameters(engine, "update_roots", loaded, table="synapses",
                             timestamp=t1.isoformat())
    params["roots_per_chunk"] = 3
    dead = runs.create_run(engine, "update_roots", params, datastack=loaded, table_name="synapses")
    pending = wf.plan_step(engine, dead, 0)
    assert len(pending) > 4
    for chunk in pending[: len(pending) // 2]:
        wf.run_chunk(engine, dead, 0, chunk)
    runs.finish_run(engine, dead, "FAILED", "killed half-way (simulated)")
    params = sync_parameters(engine, "complete", loaded, timestamp=t2.isoformat())
    run_inline(engine, "complete", params, datastack=loaded)
    assert_same_rows(read_version(engine, loaded, 1, "synapses"), oracle.table_at("synapses", t2))
