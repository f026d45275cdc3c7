"""The workflow engine: a workflow is a list of steps; a step plans chunks, runs each chunk
idempotently, then finishes.

The same step code runs two ways:

* on Celery workers (a broker URL is set): ``start_step`` plans and enqueues one task per chunk;
  the chunk that completes the step (decided by an atomic UPDATE, not by a chord) enqueues
  ``finish_step``, which starts the next step. No result backend is needed, and a chunk lost
  with a killed worker is sent again by the reaper (:mod:`matengine.workflows.leases`),
  redelivered by the broker (``acks_late``) or re-enqueued by ``resume``.
* in-process (the embedded default, no broker): :func:`execute_inline` walks the same steps,
  retrying a plan, chunk or finish that meets a transient error as Celery would
  (docs/design.md §6, §11).

A chunk's data and its marker in ``run_chunks`` commit in one transaction, so a chunk runs
exactly once in effect however often it is delivered. A chunk reads only its own spec (one
row per chunk in ``run_chunk_specs``) and a process reads a run's parameters once, so the
bookkeeping per chunk is three statements whatever the size of the plan.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, insert, select, text, update

from matengine.db import bookkeeping, writeback
from matengine.db import metadata as m
from matengine.errors import MatengineError, NotFound, TransientError, translated
from matengine.workflows import runs
from matengine.workflows.runs import Run

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from matengine.config import Settings
    from matengine.workflows.params import WorkflowParams

log = logging.getLogger(__name__)


@dataclass
class StepContext:
    engine: Engine
    run: Run
    step_index: int

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

    def paces_writeback(self, spec: Any) -> bool:
        """Whether the chunk ``spec`` (``None``: the finish) writes in bulk around PostgreSQL's
        shared buffers (an index build, a COPY, a table rewrite): then its files' writeback is
        paced while it runs (:mod:`matengine.db.writeback`). Off for work through the shared
        buffers (updates, merges), whose pages the checkpointer paces itself; pacing an ingest
        showed no gain in an A/B (docs/operations.md, "Live inserts during bulk work")."""
        return False


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


# A run's kind, datastack and parameters never change once it is recorded (and run ids are
# never reused), so a process reads them once per run, not once per chunk; whether the run is
# still active is checked in the chunk's own transaction (see :func:`_run_chunk_once`).
_RUNS: OrderedDict[tuple[str, int], Run] = OrderedDict()
_RUNS_KEPT = 64
_runs_lock = threading.Lock()


def _run_of(engine: Engine, run_id: int) -> Run:
    key = (str(engine.url), run_id)
    with _runs_lock:
        run = _RUNS.get(key)
        if run is not None:
            _RUNS.move_to_end(key)
            return run
    run = runs.get_run_header(engine, run_id)
    with _runs_lock:
        _RUNS[key] = run
        while len(_RUNS) > _RUNS_KEPT:
            _RUNS.popitem(last=False)
    return run


def _context(engine: Engine, run_id: int, index: int) -> tuple[StepContext, Step]:
    run = _run_of(engine, run_id)
    steps = steps_of(run)
    return StepContext(engine, run, index), steps[index]


# one planner per run at a time: two deliveries of one start_step must not both plan (a plan
# can create tables), the second waits and then reuses the stored plan
_PLAN_LOCK = 7106


def plan_step(engine: Engine, run_id: int, index: int) -> list[int]:
    """Plan step ``index`` once (a re-plan reuses the stored plan); return its pending chunks.

    An empty list with the step claimed for finishing means: call :func:`finish_step` now.
    """
    ctx, step = _context(engine, run_id, index)
    with engine.begin() as conn:
        if not runs.mark_running(conn, run_id, step.key):
            return []  # the run has ended
    total = _chunks_total(engine, run_id, index)
    if total is None:
        with engine.begin() as lock:
            lock.execute(text("SELECT pg_advisory_xact_lock(:k, :r)"), {"k": _PLAN_LOCK, "r": run_id})
            total = _chunks_total(lock, run_id, index)
            if total is None:
                plan = step.plan(ctx)
                _store_plan(lock, run_id, index, step.key, plan)
                # planned here and now: no chunk of it can have run yet
                return list(range(len(plan)))
    with engine.connect() as conn:
        done = set(
            conn.execute(
                select(m.run_chunks.c.chunk).where(
                    m.run_chunks.c.run_id == run_id, m.run_chunks.c.step_index == index
                )
            ).scalars()
        )
    return [i for i in range(total) if i not in done]


def _store_plan(conn: Connection, run_id: int, index: int, key: str, plan: list[Any]) -> None:
    """The step row, and one row per chunk spec (so that a chunk reads only its own)."""
    conn.execute(
        insert(m.run_steps).values(
            run_id=run_id, step_index=index, key=key, state="PLANNED", chunks_total=len(plan), plan=[]
        )
    )
    bookkeeping.store_chunk_specs(conn, run_id, index, plan)


def _chunks_total(engine_or_conn: Engine | Connection, run_id: int, index: int) -> int | None:
    stmt = select(m.run_steps.c.chunks_total).where(
        m.run_steps.c.run_id == run_id, m.run_steps.c.step_index == index
    )
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return conn.execute(stmt).scalar()
    return engine_or_conn.execute(stmt).scalar()


def _step_row(engine: Engine, run_id: int, index: int) -> Any:
    s = m.run_steps
    with engine.connect() as conn:
        return conn.execute(
            select(s.c.state, s.c.chunks_total).where(s.c.run_id == run_id, s.c.step_index == index)
        ).first()


def _plan_of(conn: Connection, run_id: int, index: int) -> list[Any]:
    """The whole plan (for ``Step.finish``): the spec rows, or the plan a run stored before
    specs had rows of their own."""
    c = m.run_chunk_specs.c
    specs = conn.execute(
        select(c.spec).where(c.run_id == run_id, c.step_index == index).order_by(c.chunk)
    ).scalars()
    plan = list(specs)
    if plan:
        return plan
    stored = conn.execute(
        select(m.run_steps.c.plan).where(m.run_steps.c.run_id == run_id, m.run_steps.c.step_index == index)
    ).scalar()
    return list(stored or [])


def claim_finish(engine: Engine, run_id: int, index: int) -> bool:
    """True for exactly one caller once every chunk of the step is done."""
    with engine.begin() as conn:
        return bookkeeping.claim_finish(conn, run_id, index)


def _is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: PostgreSQL rolled the transaction back; rerun it."""
    import psycopg.errors

    orig = getattr(exc, "orig", exc)
    return isinstance(orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure))


def run_chunk(engine: Engine, run_id: int, index: int, chunk: int) -> bool:
    """Run one chunk if not yet done; True if the step should be finished next (this call
    completed it, or found it claimed for finishing by a caller that may have died since).

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
    with engine.begin() as conn:
        # the marker row is the lock: a second delivery of this chunk waits here, then skips;
        # a run that has ended (cancelled, failed) gets no marker, so its leftovers do nothing
        marked = bookkeeping.mark_chunk(conn, run_id, index, chunk)
        if marked is not None:
            spec = marked.spec
            if spec is None:  # planned before specs had rows of their own
                spec = bookkeeping.stored_chunk_spec(conn, run_id, index, chunk)
            # bulk writes must not stall live commits
            with writeback.pacing(engine) if step.paces_writeback(spec) else nullcontext():
                rows = step.run_chunk(ctx, conn, spec)
            bookkeeping.chunk_done(conn, run_id, index, chunk, int(rows))
    if claim_finish(engine, run_id, index):
        return True
    # a redelivered chunk of a step claimed for finishing: the claimer may have died before it
    # sent finish_step; finishing twice is harmless (finish_step takes the step row's lock)
    return marked is None and step_state(engine, run_id, index) == "FINISHING"


def finish_step(engine: Engine, run_id: int, index: int) -> int | None:
    """Finish step ``index``; return the next step's index, or None when the run is complete.

    Holds the step row's lock while the step finishes, so a second delivery waits and then
    finds it DONE (it still returns the next index: the first may have died before starting it).
    """
    ctx, step = _context(engine, run_id, index)
    n_steps = len(steps_of(ctx.run))
    s = m.run_steps
    with engine.begin() as lock:
        state = lock.execute(
            select(s.c.state).where(s.c.run_id == run_id, s.c.step_index == index).with_for_update()
        ).scalar_one()
        if state != "DONE":
            # e.g. an upload's index builds
            with writeback.pacing(engine) if step.paces_writeback(None) else nullcontext():
                result = step.finish(ctx, _plan_of(lock, run_id, index)) or {}
            lock.execute(
                update(s)
                .where(s.c.run_id == run_id, s.c.step_index == index)
                .values(state="DONE", result=text("CAST(:res AS jsonb)"), finished=text("now()")),
                {"res": json.dumps(result, default=str)},
            )
            if result:
                runs.merge_result(lock, run_id, result)
    if index + 1 < n_steps:
        return index + 1
    runs.finish_run(engine, run_id, "SUCCESS")
    return None


def _inline_retrying(engine: Engine, run_id: int, settings: Settings) -> Callable[..., Any]:
    """Call a piece of a run (a plan, a chunk, a finish) as a Celery task would run it:
    foreign faults of the database and the network translated at the edge (``io_errors``), and
    a :class:`TransientError` retried with exponential backoff, each retry noted on the run,
    up to ``settings.inline_retries`` times (docs/design.md §11). Any other error, or the last
    transient one, is raised. Retrying is safe because every piece is idempotent (§6)."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    def note(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        try:
            runs.record_error(engine, run_id, f"retrying after {type(exc).__name__}: {exc}")
        except Exception:  # the database may be the thing that is down
            log.warning("could not record retry of run %s", run_id)

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(max(0, settings.inline_retries) + 1),
        wait=wait_exponential(multiplier=settings.inline_retry_wait, max=60),
        before_sleep=note,
        reraise=True,
    )

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        return retrying.copy()(translated(fn), *args)  # one retry state per call (and thread)

    return call


def _finish_inline(engine: Engine, run_id: int, index: int, claimed: bool) -> int | None:
    """Finish the step; ``claimed``: a chunk of this runner has claimed it already."""
    if not claimed:
        claim_finish(engine, run_id, index)
    return finish_step(engine, run_id, index)


def execute_inline(engine: Engine, run_id: int) -> Run:
    """Run (or resume) a whole run in this process: the embedded default's worker. It
    heartbeats as a worker of its own while it runs, so a run whose process died shows as
    stalled (:func:`matengine.workflows.leases.stalls`). A transient error is retried where it
    happened (:func:`_inline_retrying`); any other ends the run FAILED with its message."""
    from concurrent.futures import ThreadPoolExecutor

    from matengine.config import get_settings
    from matengine.workflows.leases import Heartbeat, inline_worker_name

    settings = get_settings()
    call = _inline_retrying(engine, run_id, settings)
    beat = Heartbeat(engine, inline_worker_name(run_id), run_id=run_id).start()
    try:
        index: int | None = _first_unfinished(engine, run_id)
        with ThreadPoolExecutor(
            max(1, settings.inline_workers), thread_name_prefix=f"matengine-run-{run_id}"
        ) as pool:
            while index is not None:
                pending = call(plan_step, engine, run_id, index)
                if len(pending) == 1:  # (a small run's one chunk: no hand-over to a thread)
                    claimed = [call(run_chunk, engine, run_id, index, pending[0])]
                else:
                    # chunks of a step are independent: run them side by side, as workers would
                    claimed = list(
                        pool.map(lambda c, i=index: call(run_chunk, engine, run_id, i, c), pending)
                    )
                index = call(_finish_inline, engine, run_id, index, any(claimed))
    except MatengineError as exc:
        runs.finish_run(engine, run_id, "FAILED", str(exc))
    except Exception as exc:  # the run record must say what went wrong, whatever it was
        runs.finish_run(engine, run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        beat.stop()
    return runs.get_run(engine, run_id)


def _first_unfinished(engine: Engine, run_id: int) -> int | None:
    if run_is_over(engine, run_id):
        return None
    s = m.run_steps
    with engine.connect() as conn:
        done = set(
            conn.execute(select(s.c.step_index).where(s.c.run_id == run_id, s.c.state == "DONE")).scalars()
        )
    for i in range(len(steps_of(_run_of(engine, run_id)))):
        if i not in done:
            return i
    return None


def run_is_over(engine: Engine, run_id: int) -> bool:
    """A cancelled or failed run's leftover tasks do nothing."""
    return runs.get_state(engine, run_id) not in runs.ACTIVE


def step_state(engine: Engine, run_id: int, index: int) -> str | None:
    row = _step_row(engine, run_id, index)
    return None if row is None else row.state
