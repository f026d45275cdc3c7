"""The workflow engine: a workflow is a list of steps; a step plans chunks, runs each chunk
idempotently, then finishes.

The same step code runs two ways:

* on Celery workers (a broker URL is set): ``start_step`` plans and enqueues one task per chunk;
  the chunk that completes the step (decided by an atomic UPDATE, not by a chord) enqueues
  ``finish_step``, which starts the next step. No result backend is needed, and a chunk lost
  with a killed worker is redelivered (``acks_late``) or re-enqueued by ``resume``.
* in-process (the embedded default, no broker): :func:`execute_inline` walks the same steps.

A chunk's data and its marker in ``run_chunks`` commit in one transaction, so a chunk runs
exactly once in effect however often it is delivered.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, insert, select, text, update

from matengine.db import metadata as m
from matengine.errors import MatengineError, NotFound
from matengine.workflows import runs
from matengine.workflows.runs import Run

if TYPE_CHECKING:
    from matengine.workflows.params import WorkflowParams


@dataclass
class StepContext:
    engine: Engine
    run: Run
    step_index: int

    @property
    def params(self) -> dict[str, Any]:
        return self.run.parameters

    @cached_property
    def parameters(self) -> WorkflowParams:
        """The run's typed, frozen parameter object (docs/design.md §12)."""
        from matengine.workflows.params import parameters_of

        return parameters_of(self.run)

    @cached_property
    def segmentation(self):
        from matengine.catalog import get_datastack
        from matengine.config import get_settings
        from matengine.workflows.segmentation_cache import cached_segmentation

        ds = get_datastack(self.engine, self.run.datastack)
        return cached_segmentation(ds.segmentation_source, get_settings().segmentation_token)


class Step(ABC):
    """One stage of a workflow. ``plan`` returns JSON-able chunk specs; ``run_chunk`` must only
    write through ``conn`` (the engine commits it together with the chunk's marker)."""

    key: str

    @abstractmethod
    def plan(self, ctx: StepContext) -> list[Any]: ...

    @abstractmethod
    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int: ...

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any] | None:
        return None


StepBuilder = Callable[[Run], list[Step]]
WORKFLOWS: dict[str, StepBuilder] = {}


def workflow(kind: str) -> Callable[[StepBuilder], StepBuilder]:
    def register(builder: StepBuilder) -> StepBuilder:
        WORKFLOWS[kind] = builder
        return builder

    return register


def steps_of(run: Run) -> list[Step]:
    try:
        builder = WORKFLOWS[run.kind]
    except KeyError:
        raise NotFound(f"unknown workflow kind {run.kind!r}") from None
    return builder(run)


def _context(engine: Engine, run_id: int, index: int) -> tuple[StepContext, Step]:
    run = runs.get_run(engine, run_id)
    steps = steps_of(run)
    return StepContext(engine, run, index), steps[index]


def plan_step(engine: Engine, run_id: int, index: int) -> list[int]:
    """Plan step ``index`` once (a re-plan reuses the stored plan); return its pending chunks.

    An empty list with the step claimed for finishing means: call :func:`finish_step` now.
    """
    ctx, step = _context(engine, run_id, index)
    if ctx.run.done:
        return []
    with engine.begin() as conn:
        runs.mark_running(conn, run_id, step.key)
    row = _step_row(engine, run_id, index)
    if row is None:
        plan = step.plan(ctx)
        with engine.begin() as conn:
            conn.execute(
                insert(m.run_steps).values(
                    run_id=run_id,
                    step_index=index,
                    key=step.key,
                    state="PLANNED",
                    chunks_total=len(plan),
                    plan=text("CAST(:p AS jsonb)"),
                ),
                {"p": json.dumps(plan)},
            )
        row = _step_row(engine, run_id, index)
    with engine.connect() as conn:
        done = set(
            conn.execute(
                select(m.run_chunks.c.chunk).where(
                    m.run_chunks.c.run_id == run_id, m.run_chunks.c.step_index == index
                )
            ).scalars()
        )
    return [i for i in range(row.chunks_total) if i not in done]


def _step_row(engine: Engine, run_id: int, index: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(m.run_steps).where(m.run_steps.c.run_id == run_id, m.run_steps.c.step_index == index)
        ).first()


def claim_finish(engine: Engine, run_id: int, index: int) -> bool:
    """True for exactly one caller once every chunk of the step is done."""
    with engine.begin() as conn:
        claimed = conn.execute(
            text(
                "UPDATE matengine.run_steps s SET state = 'FINISHING' "
                "WHERE s.run_id = :r AND s.step_index = :i AND s.state = 'PLANNED' AND "
                "(SELECT count(*) FROM matengine.run_chunks c "
                " WHERE c.run_id = :r AND c.step_index = :i) >= s.chunks_total RETURNING 1"
            ),
            {"r": run_id, "i": index},
        ).first()
    return claimed is not None


def _is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: PostgreSQL rolled the transaction back; rerun it."""
    import psycopg.errors

    orig = getattr(exc, "orig", exc)
    return isinstance(orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure))


def run_chunk(engine: Engine, run_id: int, index: int, chunk: int) -> bool:
    """Run one chunk if not yet done; True if this call completed the step (finish it next).

    Chunks of one step may touch the same rows (two root columns of one row expiring in two
    slices); PostgreSQL then aborts one as a deadlock, and it is simply run again."""
    for attempt in range(5):
        try:
            return _run_chunk_once(engine, run_id, index, chunk)
        except Exception as exc:
            if not _is_conflict(exc) or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _run_chunk_once(engine: Engine, run_id: int, index: int, chunk: int) -> bool:
    ctx, step = _context(engine, run_id, index)
    if ctx.run.done:
        return False
    row = _step_row(engine, run_id, index)
    spec = row.plan[chunk]
    with engine.begin() as conn:
        # the marker row is the lock: a second delivery of this chunk waits here, then skips
        fresh = conn.execute(
            text(
                "INSERT INTO matengine.run_chunks (run_id, step_index, chunk, rows) "
                "VALUES (:r, :i, :c, 0) ON CONFLICT DO NOTHING RETURNING 1"
            ),
            {"r": run_id, "i": index, "c": chunk},
        ).first()
        if fresh is not None:
            rows = step.run_chunk(ctx, conn, spec)
            conn.execute(
                update(m.run_chunks)
                .where(
                    m.run_chunks.c.run_id == run_id,
                    m.run_chunks.c.step_index == index,
                    m.run_chunks.c.chunk == chunk,
                )
                .values(rows=int(rows))
            )
            conn.execute(
                text("UPDATE matengine.workflow_runs SET heartbeat = now() WHERE id = :r"), {"r": run_id}
            )
    return claim_finish(engine, run_id, index)


def finish_step(engine: Engine, run_id: int, index: int) -> int | None:
    """Finish step ``index``; return the next step's index, or None when the run is complete."""
    ctx, step = _context(engine, run_id, index)
    n_steps = len(steps_of(ctx.run))
    row = _step_row(engine, run_id, index)
    if row.state != "DONE":
        result = step.finish(ctx, row.plan) or {}
        with engine.begin() as conn:
            conn.execute(
                update(m.run_steps)
                .where(m.run_steps.c.run_id == run_id, m.run_steps.c.step_index == index)
                .values(state="DONE", result=text("CAST(:res AS jsonb)"), finished=text("now()")),
                {"res": json.dumps(result, default=str)},
            )
            if result:
                runs.merge_result(conn, run_id, result)
    if index + 1 < n_steps:
        return index + 1
    runs.finish_run(engine, run_id, "SUCCESS")
    return None


def execute_inline(engine: Engine, run_id: int) -> Run:
    """Run (or resume) a whole run in this process: the embedded default's worker."""
    try:
        from concurrent.futures import ThreadPoolExecutor

        from matengine.config import get_settings

        index: int | None = _first_unfinished(engine, run_id)
        with ThreadPoolExecutor(
            max(1, get_settings().inline_workers), thread_name_prefix=f"matengine-run-{run_id}"
        ) as pool:
            while index is not None:
                pending = plan_step(engine, run_id, index)
                # chunks of a step are independent: run them side by side, as workers would
                list(pool.map(lambda c, i=index: run_chunk(engine, run_id, i, c), pending))
                claim_finish(engine, run_id, index)
                index = finish_step(engine, run_id, index)
    except MatengineError as exc:
        runs.finish_run(engine, run_id, "FAILED", str(exc))
    except Exception as exc:  # the run record must say what went wrong, whatever it was
        runs.finish_run(engine, run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    return runs.get_run(engine, run_id)


def _first_unfinished(engine: Engine, run_id: int) -> int | None:
    run = runs.get_run(engine, run_id)
    if run.done:
        return None
    done = {s["index"] for s in run.steps if s["state"] == "DONE"}
    for i in range(len(steps_of(run))):
        if i not in done:
            return i
    return None


def run_is_over(engine: Engine, run_id: int) -> bool:
    """A cancelled or failed run's leftover tasks do nothing."""
    return runs.get_run(engine, run_id).done


def step_state(engine: Engine, run_id: int, index: int) -> str | None:
    row = _step_row(engine, run_id, index)
    return None if row is None else row.state
