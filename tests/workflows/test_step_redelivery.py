"""The shared step suite: every workflow's steps survive redelivery of any chunk.

Each workflow kind runs twice on twin datastacks: once plainly, once through
:func:`run_with_redeliveries`, which delivers every chunk of every step first into a crash
(the chunk writes its rows, then the process "dies" before the commit), then twice normally,
then once more after the step's other chunks ran. Both twins must hold the same rows (and a
version equal to the oracle). A Step subclass that no workflow here runs fails the suite.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from matengine import catalog
from matengine.workflows import engine as wf
from matengine.workflows import runs
from matengine.workflows.engine import Step
from matengine.workflows.submit import sync_parameters

from .helpers import TABLE_SCHEMAS, assert_same_rows, make_datastack, read_table, read_version, upload_params

SEEN: set[type[Step]] = set()
REDELIVERED: dict[str, int] = {}  # step class -> chunks redelivered
# steps whose work is all in plan/finish: no chunk to redeliver (their finish is delivered twice)
NO_CHUNKS = {"PrepareVersionStep", "PublishStep"}


class SimulatedCrash(Exception):
    """The worker died after the chunk wrote its rows, before its transaction committed."""


def _crash_after_writing(cls: type[Step]):
    original = cls.run_chunk

    def run_chunk(self, ctx, conn, spec):
        original(self, ctx, conn, spec)
        raise SimulatedCrash

    return original, run_chunk


def _marked(engine, run_id: int, index: int, chunk: int) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT 1 FROM matengine.run_chunks WHERE run_id = :r AND step_index = :i AND chunk = :c"
                ),
                {"r": run_id, "i": index, "c": chunk},
            ).first()
            is not None
        )


def run_with_redeliveries(engine, kind: str, params: dict, *, datastack: str, table: str | None = None):
    import matengine.workflows.registry  # noqa: F401

    run_id = runs.create_run(engine, kind, params, datastack=datastack, table_name=table)
    steps = wf.steps_of(runs.get_run(engine, run_id))
    index: int | None = 0
    while index is not None:
        step = steps[index]
        SEEN.add(type(step))
        pending = wf.plan_step(engine, run_id, index)
        name = type(step).__name__
        REDELIVERED[name] = REDELIVERED.get(name, 0) + len(pending)
        for chunk in pending:
            cls = type(step)
            original, crashing = _crash_after_writing(cls)
            cls.run_chunk = crashing  # type: ignore[method-assign]
            try:
                with pytest.raises(SimulatedCrash):
                    wf.run_chunk(engine, run_id, index, chunk)
            finally:
                cls.run_chunk = original  # type: ignore[method-assign]
            assert not _marked(engine, run_id, index, chunk), "a crashed chunk left its marker"
            wf.run_chunk(engine, run_id, index, chunk)
            wf.run_chunk(engine, run_id, index, chunk)  # delivered again at once
            assert _marked(engine, run_id, index, chunk)
        for chunk in pending:  # and again once every other chunk of the step ran
            wf.run_chunk(engine, run_id, index, chunk)
        wf.claim_finish(engine, run_id, index)
        nxt = wf.finish_step(engine, run_id, index)
        if nxt is not None:
            assert wf.finish_step(engine, run_id, index) == nxt  # a finish delivered twice
        index = nxt
    run = runs.get_run(engine, run_id)
    assert run.state == "SUCCESS", run.errors
    assert run.chunks_done == run.chunks_total
    return run


def plainly(engine, kind: str, params: dict, *, datastack: str, table: str | None = None):
    import matengine.workflows.registry  # noqa: F401

    run_id = runs.create_run(engine, kind, params, datastack=datastack, table_name=table)
    run = wf.execute_inline(engine, run_id)
    assert run.state == "SUCCESS", run.errors
    return run


def _tables(engine, name: str) -> dict[str, dict]:
    out = {}
    for t in catalog.list_tables(engine, name):
        seg = t.names.segmentation_q if t.schema.bound_points else None
        out[t.table_name] = read_table(engine, t.names.live_q, t.schema_type, seg)
    return out


def _upload(engine, name: str, synth, run, tables=("synapses", "cells")) -> None:
    for table in tables:
        roots = synth.initial_timestamp.isoformat() if table == "synapses" else None
        params = upload_params(name, synth.directory, table, synth.start.isoformat(), roots)
        run(engine, "bulk_upload", params, datastack=name, table=table)


def _twin(engine, synth, kind: str, run, folder=None) -> str:
    """A datastack with the synthetic tables uploaded (plainly), then ``kind`` run by ``run``
    (``export``: of a version made plainly, into ``folder``)."""
    name = f"rd{kind[:3]}_{uuid.uuid4().hex[:6]}"
    make_datastack(engine, name, synth)
    if kind == "export":
        from matengine import views
        from matengine.workflows.export import export_lock, export_parameters

        _upload(engine, name, synth, plainly)
        # a view, so that its export step is redelivered too
        big = {"tables": ["synapses"], "filters": {"filter_greater_dict": {"synapses": {"size": 300}}}}
        views.define_view(engine, name, "big", big)
        when = synth.edit_timestamps[40].isoformat()
        params = sync_parameters(engine, "complete", name, timestamp=when, days_to_expire=100_000)
        plainly(engine, "complete", params, datastack=name)
        params = export_parameters(engine, name, 1, to=f"file://{folder}", chunk_rows=700, neuroglancer=True)
        run(engine, "export", params, datastack=name, table=export_lock(1))
        return name
    if kind == "bulk_upload":
        _upload(engine, name, synth, run)
        return name
    _upload(engine, name, synth, plainly)
    when = synth.start if kind == "ingest" else synth.edit_timestamps[40]
    if kind == "update_roots":  # update-roots needs ingested rows
        plainly(
            engine,
            "ingest",
            sync_parameters(engine, "ingest", name, timestamp=synth.start.isoformat()),
            datastack=name,
        )
    params = sync_parameters(engine, kind, name, timestamp=when.isoformat(), chunk_rows=600)
    params["roots_per_chunk"] = 20
    run(engine, kind, params, datastack=name)
    return name


# every registered kind; ``materialize`` is built by the same function as ``complete``
KINDS = ["bulk_upload", "ingest", "update_roots", "sync_live", "complete", "export"]


def test_the_suite_covers_every_workflow_kind():
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows.engine import WORKFLOWS

    assert set(WORKFLOWS) == {*KINDS, "materialize"}
    assert WORKFLOWS["materialize"] is WORKFLOWS["complete"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "export"])
def test_every_chunk_redelivered_gives_the_same_rows(engine, synth, oracle, kind):
    plain = _twin(engine, synth, kind, plainly)
    redelivered = _twin(engine, synth, kind, run_with_redeliveries)
    try:
        want, got = _tables(engine, plain), _tables(engine, redelivered)
        assert set(got) == set(want) == set(TABLE_SCHEMAS)
        for table in want:
            assert_same_rows(got[table], want[table])
        if kind == "complete":
            when = synth.edit_timestamps[40]
            for table in TABLE_SCHEMAS:
                assert_same_rows(read_version(engine, redelivered, 1, table), oracle.table_at(table, when))
    finally:
        catalog.drop_datastack(engine, plain)
        catalog.drop_datastack(engine, redelivered)


def test_every_export_chunk_redelivered_gives_the_same_files(engine, synth, tmp_path):
    """An export writes files, not rows: the same files, byte for byte (the manifest's sha256)."""
    import json

    plain = _twin(engine, synth, "export", plainly, tmp_path / "plain")
    redelivered = _twin(engine, synth, "export", run_with_redeliveries, tmp_path / "redelivered")
    try:
        want, got = (
            json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("plain", "redelivered")
        )
        assert got["tables"] == want["tables"] and want["tables"]
        for manifest in (want, got):  # when each twin defined its view: not the export's doing
            manifest["views"]["big"].pop("defined")
        assert got["views"] == want["views"] and want["views"]["big"]["rows"] > 0
    finally:
        catalog.drop_datastack(engine, plain)
        catalog.drop_datastack(engine, redelivered)


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_the_suite_ran_every_step_class():
    """Runs after the parametrized test above (pytest keeps file order)."""
    import matengine.workflows.registry  # noqa: F401

    steps = {c for c in _all_subclasses(Step) if c.__module__.startswith("matengine.")}
    assert SEEN, "run the whole module: the suite test records the steps it ran"
    assert steps - SEEN == set(), (
        f"steps no workflow in the suite ran: {sorted(c.__name__ for c in steps - SEEN)}"
    )
