"""A chunk reads only its own spec, and a step reads its run once: the statements a chunk of
update-roots sends do not grow with the number of chunks (before, every chunk reloaded the
run, its steps and progress, and the whole plan of every expired root id)."""

from __future__ import annotations

import re

from sqlalchemy import event

from matengine.workflows import engine as wf
from matengine.workflows import runs
from matengine.workflows.submit import sync_parameters


def statements_per_chunk(engine, datastack: str, when, roots_per_chunk: int) -> list[list[str]]:
    """Run an update-roots chunk by chunk; the SQL each chunk sent through SQLAlchemy."""
    import matengine.workflows.registry  # noqa: F401

    params = sync_parameters(engine, "update_roots", datastack, timestamp=when.isoformat())
    params["roots_per_chunk"] = roots_per_chunk
    run_id = runs.create_run(engine, "update_roots", params, datastack=datastack)
    index = next(i for i, s in enumerate(wf.steps_of(runs.get_run(engine, run_id))) if "synapses" in s.key)
    for i in range(index):
        wf.plan_step(engine, run_id, i)
        wf.claim_finish(engine, run_id, i)
        wf.finish_step(engine, run_id, i)
    pending = wf.plan_step(engine, run_id, index)
    sent: list[str] = []

    def record(conn, cursor, statement, *args):  # noqa: ANN001
        sent.append(statement)

    per_chunk = []
    event.listen(engine, "before_cursor_execute", record)
    try:
        for chunk in pending:
            sent.clear()
            wf.run_chunk(engine, run_id, index, chunk)
            per_chunk.append(list(sent))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    wf.claim_finish(engine, run_id, index)
    wf.finish_step(engine, run_id, index)
    assert runs.get_run(engine, run_id).state == "SUCCESS"
    return per_chunk


BOOKKEEPING = re.compile(r"matengine\.(workflow_runs|run_steps|run_chunks|run_chunk_specs)\b")


def _bookkeeping(chunk: list[str]) -> int:
    return sum(bool(BOOKKEEPING.search(s)) for s in chunk)


def test_chunk_statements_do_not_grow_with_the_number_of_chunks(engine, loaded, synth):
    few = statements_per_chunk(engine, loaded, synth.edit_timestamps[20], roots_per_chunk=50)
    many = statements_per_chunk(engine, loaded, synth.edit_timestamps[60], roots_per_chunk=2)
    assert len(many) > 4 * len(few) >= 4
    for chunks in (few, many):
        # the run's row was read once, when the step was planned; every chunk sends the marker
        # (with the run's state and the chunk's own spec), its row count with the run's
        # progress, and the claim for finishing
        assert {_bookkeeping(c) for c in chunks} == {3}
        for chunk in chunks:
            assert not any(re.search(r"\bplan\b", s) for s in chunk), "a chunk read the stored plan"
            # the step's own: the table's catalog row, then per root column that expired a
            # staging table, its truncation and one UPDATE
            assert len(chunk) - _bookkeeping(chunk) <= 3 + 3 * 2
    most = max(len(c) for c in many)
    print(f"\nupdate-roots: {len(many)} chunks x at most {most} statements per chunk (3 bookkeeping)")
