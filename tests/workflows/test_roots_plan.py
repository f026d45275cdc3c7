"""Update roots by rewriting the segmentation table: exact, crash safe, live writes kept and not
held up; and the rule that chooses between the rewrite and the in-place plan."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from matengine import annotations as ann
from matengine import catalog
from matengine.db.connection import sqlalchemy_url
from matengine.workflows import roots_rewrite, runs
from matengine.workflows.roots_rewrite import (
    REWRITE_MAX_PENDING,
    REWRITE_MIN_ROWS,
    RootsCounts,
    choose_roots_plan,
    count_for_plan,
    crossover_fraction,
)
from matengine.workflows.submit import sync_parameters

from .helpers import assert_same_rows, read_version, run_inline
from .test_live_writes import LockWatch, _row


def _complete(engine, datastack, when, plan="rewrite", **extra):
    params = sync_parameters(engine, "complete", datastack, timestamp=when.isoformat())
    params["roots_plan"] = plan
    params.update(extra)
    return run_inline(engine, "complete", params, datastack=datastack)


def _rewrite_params(engine, datastack, when):
    params = sync_parameters(engine, "update_roots", datastack, table="synapses", timestamp=when.isoformat())
    params["roots_plan"] = "rewrite"
    return params


def _segmentation_objects(engine, datastack):
    seg = catalog.get_table(engine, datastack, "synapses").names.segmentation
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": datastack}
            ).scalars()
        )
        indexes = set(
            conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND tablename = :t"),
                {"s": datastack, "t": seg},
            ).scalars()
        )
    return tables, {i.replace(seg, "SEG") for i in indexes}


def _roots(engine, table):
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT id, pre_pt_root_id, post_pt_root_id FROM {table.names.segmentation_q} ORDER BY id")
        ).all()


def test_rewrite_plan_versions_equal_oracle(engine, loaded, synth, oracle):
    edits = sorted(synth.edit_timestamps)
    _, indexes_before = _segmentation_objects(engine, loaded)
    for number, when in enumerate([edits[10], edits[40], edits[-1] + timedelta(days=1)], start=1):
        run = _complete(engine, loaded, when)
        assert run.result["update_roots:synapses"]["plan"] == "rewrite"
        for table in ("synapses", "cells"):
            assert_same_rows(read_version(engine, loaded, number, table), oracle.table_at(table, when))
    tables, indexes = _segmentation_objects(engine, loaded)
    # the rewritten table carries the original's name and every index under its own name
    assert not [t for t in tables if t.startswith("mte_rw_")]
    assert indexes >= indexes_before | {"ix_SEG_no_seg", "SEG_pkey"}


def test_rewrite_repairs_an_in_place_run_that_died_half_way(engine, loaded, synth, oracle):
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows import engine as wf

    edits = sorted(synth.edit_timestamps)
    t1, t2 = edits[50], edits[30]
    params = sync_parameters(engine, "update_roots", loaded, table="synapses", timestamp=t1.isoformat())
    params.update(roots_per_chunk=3, roots_plan="in_place")
    dead = runs.create_run(engine, "update_roots", params, datastack=loaded, table_name="synapses")
    pending = wf.plan_step(engine, dead, 0)
    for chunk in pending[: len(pending) // 2]:
        wf.run_chunk(engine, dead, 0, chunk)
    runs.finish_run(engine, dead, "FAILED", "killed half-way (simulated)")
    _complete(engine, loaded, t2)
    assert_same_rows(read_version(engine, loaded, 1, "synapses"), oracle.table_at("synapses", t2))


def test_rewrite_that_dies_before_its_swap_changes_nothing_and_the_next_run_is_exact(
    engine, loaded, synth, oracle, monkeypatch
):
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows.engine import execute_inline

    edits = sorted(synth.edit_timestamps)
    table = catalog.get_table(engine, loaded, "synapses")
    before = _roots(engine, table)

    def die(conn, seg_q):
        raise RuntimeError("worker killed after building the new table (simulated)")

    monkeypatch.setattr(roots_rewrite, "_lock_for_swap", die)
    params = _rewrite_params(engine, loaded, edits[40])
    run_id = runs.create_run(engine, "update_roots", params, datastack=loaded, table_name="synapses")
    with pytest.raises(RuntimeError, match="simulated"):
        execute_inline(engine, run_id)
    assert runs.get_run(engine, run_id).state == "FAILED"
    assert _roots(engine, table) == before
    tables, _ = _segmentation_objects(engine, loaded)
    assert not [t for t in tables if t.startswith("mte_rw_")]
    monkeypatch.undo()
    _complete(engine, loaded, edits[60])
    assert_same_rows(read_version(engine, loaded, 1, "synapses"), oracle.table_at("synapses", edits[60]))


def test_rows_inserted_and_ingested_during_a_rewrite_are_kept(
    engine, database_url, loaded, synth, oracle, monkeypatch
):
    """Between the copy and the swap: one row inserted (still pending), one inserted before the
    copy and ingested by id after it. Both must come through the swap as they are."""
    from matengine.workflows.sync_steps import ingest_rows_by_id

    edits = sorted(synth.edit_timestamps)
    early = ann.insert_annotations(engine, loaded, "synapses", [_row(oracle, 1)])
    real_lock = roots_rewrite._lock_for_swap
    late: list[int] = []
    ingested: list[int] = []

    def writes_then_lock(conn, seg_q):
        other = create_engine(sqlalchemy_url(database_url))
        try:
            late.extend(ann.insert_annotations(other, loaded, "synapses", [_row(oracle, 2)]))
            ingested.append(ingest_rows_by_id(other, loaded, "synapses", early))
        finally:
            other.dispose()
        real_lock(conn, seg_q)

    monkeypatch.setattr(roots_rewrite, "_lock_for_swap", writes_then_lock)
    params = _rewrite_params(engine, loaded, edits[40])
    run_inline(engine, "update_roots", params, datastack=loaded, table="synapses")
    assert ingested == [1]
    monkeypatch.undo()
    table = catalog.get_table(engine, loaded, "synapses")
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                text(f"SELECT id, pre_pt_root_id FROM {table.names.segmentation_q} WHERE id = ANY(:i)"),
                {"i": early + late},
            ).all()
        )
    assert set(got) == set(early + late)
    assert got[late[0]] is None  # still waiting for ingest
    assert got[early[0]] is not None  # ingested by id at the run's target time
    # and the next version has both rows, exactly
    after = utc_after(edits)
    _complete(engine, loaded, after)
    rows = ann.get_annotations(engine, loaded, "synapses", early + late)
    extra = [
        {
            "id": r["id"],
            "created": r["created"],
            **{k: r[k] for k in ("pre_pt_position", "ctr_pt_position", "post_pt_position", "size")},
        }
        for r in rows
    ]
    assert_same_rows(
        read_version(engine, loaded, 1, "synapses"), oracle.table_at("synapses", after, extra_rows=extra)
    )


def utc_after(edits):
    from matengine.timeutil import utcnow

    return max(utcnow(), edits[-1] + timedelta(seconds=1))


def test_inserts_never_wait_100ms_on_a_rewrite_even_behind_a_long_reader(
    engine, database_url, loaded, synth, oracle, monkeypatch
):
    """A reader holds the table for a second when the swap wants it: the swap's short lock
    attempts must not make the writers queue behind it."""
    writer_engine = create_engine(
        sqlalchemy_url(database_url), connect_args={"application_name": "rewrite-writer"}
    )
    real_lock = roots_rewrite._lock_for_swap
    reader_done = threading.Event()

    seg_q = catalog.get_table(engine, loaded, "synapses").names.segmentation_q

    def long_reader() -> None:
        with engine.connect() as conn:
            conn.execute(text(f"SELECT count(*) FROM {seg_q}"))
            time.sleep(1.0)
            conn.commit()
        reader_done.set()

    def lock_behind_reader(conn, seg_q):
        threading.Thread(target=long_reader).start()
        time.sleep(0.2)
        real_lock(conn, seg_q)
        assert reader_done.is_set()  # the swap really had to wait for the reader

    monkeypatch.setattr(roots_rewrite, "_lock_for_swap", lock_behind_reader)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            written.extend(ann.insert_annotations(writer_engine, loaded, "synapses", [_row(oracle, i)]))
            i += 1
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    with LockWatch(engine, "rewrite-writer") as watch:
        thread.start()
        edits = sorted(synth.edit_timestamps)
        params = _rewrite_params(engine, loaded, edits[40])
        run_inline(engine, "update_roots", params, datastack=loaded, table="synapses")
        time.sleep(0.1)
        stop.set()
        thread.join()
    writer_engine.dispose()
    assert len(written) > 20
    assert watch.longest < 0.1, f"an insert waited {watch.longest * 1000:.0f} ms on a lock"
    table = catalog.get_table(engine, loaded, "synapses")
    with engine.connect() as conn:
        kept = conn.execute(
            text(f"SELECT count(*) FROM {table.names.segmentation_q} WHERE id = ANY(:i)"), {"i": written}
        ).scalar_one()
    assert kept == len(written)


# ---------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("rows", [1_000_000, 10_000_000, 300_000_000])
def test_default_rule_rewrites_above_the_crossover_fraction_only(rows):
    f = crossover_fraction(rows)
    assert 0.001 < f < 0.5
    below = RootsCounts(table_rows=rows, touched_rows=int(rows * f * 0.9), pending_rows=0)
    above = RootsCounts(table_rows=rows, touched_rows=int(rows * f * 1.1), pending_rows=0)
    assert choose_roots_plan(below) == "in_place"
    assert choose_roots_plan(above) == "rewrite"
    # the cases measured by `matengine bench --only sync`: 0.1% and 1% of roots expired touch
    # ~0.16% and ~1.6% of rows and stay in place; 10% (~16% of rows) is rewritten
    assert choose_roots_plan(RootsCounts(rows, int(rows * 0.0016), 0)) == "in_place"
    assert choose_roots_plan(RootsCounts(rows, int(rows * 0.016), 0)) == (
        "rewrite" if rows > 10_000_000 else "in_place"
    )
    assert choose_roots_plan(RootsCounts(rows, int(rows * 0.16), 0)) == "rewrite"


def test_the_crossover_falls_as_the_table_grows():
    assert crossover_fraction(10_000_000) < crossover_fraction(1_000_000)
    assert crossover_fraction(500_000) == crossover_fraction(1_000_000)


def test_default_rule_keeps_small_tables_and_many_pending_rows_in_place():
    assert choose_roots_plan(RootsCounts(REWRITE_MIN_ROWS - 1, REWRITE_MIN_ROWS - 1, 0)) == "in_place"
    many_pending = RootsCounts(10_000_000, 5_000_000, REWRITE_MAX_PENDING + 1)
    assert choose_roots_plan(many_pending) == "in_place"


def test_counts_for_the_rule_are_exact_when_every_expired_root_is_sampled(engine, loaded, synth):
    import numpy as np

    from matengine.segmentation import open_segmentation

    table = catalog.get_table(engine, loaded, "synapses")
    graph = open_segmentation(synth.graph_url).roots
    expired, _ = graph.get_delta_roots(table.roots_last_updated, sorted(synth.edit_timestamps)[40])
    expired = np.unique(np.asarray(expired, np.uint64)).astype(np.int64)
    assert 0 < len(expired) <= roots_rewrite.SAMPLE_ROOTS
    with engine.connect() as conn:
        counts = count_for_plan(conn, table, expired)
        exact = conn.execute(
            text(
                f"SELECT count(*) FROM {table.names.segmentation_q} "
                "WHERE pre_pt_root_id = ANY(:r) OR post_pt_root_id = ANY(:r)"
            ),
            {"r": expired.tolist()},
        ).scalar_one()
        rows = conn.execute(text(f"SELECT count(*) FROM {table.names.segmentation_q}")).scalar_one()
    assert counts.touched_rows == exact
    assert counts.pending_rows == 0
    assert abs(counts.table_rows - rows) <= rows * 0.05


def test_auto_keeps_a_small_table_in_place(engine, loaded, synth, oracle):
    when = sorted(synth.edit_timestamps)[40]
    run = _complete(engine, loaded, when, plan="auto")
    assert run.result["update_roots:synapses"]["plan"] == "in_place"
    assert_same_rows(read_version(engine, loaded, 1, "synapses"), oracle.table_at("synapses", when))
