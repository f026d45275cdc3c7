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
        params = sync_parameters(engine, "complete", loaded, timestamp=when.isoformat(), chunk_rows=900)
        # small root slices, run two at a time: one row's two root columns often expire in
        # different slices that are written concurrently
        params["roots_per_chunk"] = 7
        run = run_inline(engine, "complete", params, datastack=loaded)
        assert run.result["version"] == number
        for table in TABLE_SCHEMAS:
            assert_same_rows(read_version(engine, loaded, number, table), oracle.table_at(table, when))


def test_update_roots_that_died_half_way_is_repaired_by_the_next_run(engine, loaded, synth, oracle):
    """Rows left at the dead run's target T1 and rows still at L are both brought to T2."""
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows import engine as wf
    from matengine.workflows import runs

    edits = sorted(synth.edit_timestamps)
    t1, t2 = edits[50], edits[30]  # the next run even goes to an earlier time than the dead one
    params = sync_parameters(engine, "update_roots", loaded, table="synapses", timestamp=t1.isoformat())
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


def test_annotation_writes_between_runs_land_in_the_right_versions(engine, tmp_path):
    """Inserts, updates (supersede) and deletes between two complete runs: version 1 has none
    of them, version 2 all, each exactly as the oracle says at its time."""
    import uuid

    from matengine import annotations as ann
    from matengine import catalog
    from matengine.synth.generate import generate_dataset
    from matengine.synth.oracle import Oracle
    from matengine.timeutil import utcnow

    from .helpers import load_dataset, make_datastack

    now = utcnow().replace(microsecond=0)
    info = generate_dataset(
        tmp_path / "d",
        synapses=1500,
        cells=20,
        edits=40,
        seed=4,
        start=now - timedelta(days=2),
        span=timedelta(days=1),
    )
    oracle = Oracle(info.directory)
    name = f"w_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, info)
    load_dataset(engine, name, info)
    t1 = info.end
    run_inline(
        engine,
        "complete",
        sync_parameters(engine, "complete", name, timestamp=t1.isoformat()),
        datastack=name,
    )
    base = oracle.base_rows("synapses")
    row = {
        "pre_pt": {"position": base["pre_pt_position"][0].tolist()},
        "ctr_pt": {"position": base["ctr_pt_position"][0].tolist()},
        "post_pt": {"position": base["post_pt_position"][1].tolist()},
        "size": 1.5,
    }
    new_ids = ann.insert_annotations(engine, name, "synapses", [row, dict(row, size=2.5)])
    old = [int(i) for i in base["id"][:3]]
    mapping = ann.update_annotations(engine, name, "synapses", [dict(row, id=old[0], size=9.0)])
    ann.delete_annotations(engine, name, "synapses", old[1:])
    t2 = utcnow()
    run_inline(
        engine,
        "complete",
        sync_parameters(engine, "complete", name, timestamp=t2.isoformat()),
        datastack=name,
    )
    written = ann.get_annotations(engine, name, "synapses", new_ids + list(mapping.values()) + old)
    extra = [
        {
            k: r[k]
            for k in (
                "id",
                "created",
                "deleted",
                "pre_pt_position",
                "ctr_pt_position",
                "post_pt_position",
                "size",
            )
        }
        for r in written
        if r["id"] not in old
    ]
    deleted = {r["id"]: r["deleted"] for r in written if r["id"] in old}
    assert all(deleted.values()) and mapping[old[0]] not in old
    for version, when in ((1, t1), (2, t2)):
        assert_same_rows(
            read_version(engine, name, version, "synapses"),
            oracle.table_at("synapses", when, extra_rows=extra, deleted=deleted),
        )
    v2 = read_version(engine, name, 2, "synapses")
    assert set(new_ids) <= set(v2["id"].tolist()) and not set(old) & set(v2["id"].tolist())
    catalog.drop_datastack(engine, name)


def test_ingest_by_boxes_finds_every_row_once(engine, synth, oracle):
    """Rows uploaded without ids, ingested in many x/y boxes (outer ones open-ended, some
    points outside the volume): every row gets the oracle's supervoxels and roots."""
    import uuid

    from matengine import catalog

    from .helpers import make_datastack, upload_params

    name = f"box_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    params = upload_params(name, synth.directory, "synapses", synth.start.isoformat(), None)
    params["column_mapping"] = {
        k: v for k, v in params["column_mapping"].items() if not k.startswith(("sv_", "root_"))
    }
    run_inline(engine, "bulk_upload", params, datastack=name, table="synapses")
    ingest = sync_parameters(engine, "ingest", name, timestamp=synth.start.isoformat(), chunk_rows=300)
    run = run_inline(engine, "ingest", ingest, datastack=name)
    assert run.chunks_total >= 4 and run.rows_done == 3000  # 3 x 2 volume chunks in x, y
    t = catalog.get_table(engine, name, "synapses")
    got = read_table(engine, t.names.live_q, "synapse", t.names.segmentation_q)
    assert_same_rows(got, oracle.table_at("synapses", synth.start))
    catalog.drop_datastack(engine, name)
