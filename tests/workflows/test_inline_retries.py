"""The in-process worker (the embedded default) retries a transient error where it happened —
in a plan, a chunk or a finish — as Celery workers do, and the run's result is exact; a
permanent error fails the run at once with its message (docs/design.md §6, §11).

A workflow of the test's own is registered: each chunk writes rows through its connection
into a probe table and then, once, meets the fault the test asks for, so a retry that did not
roll back the failed attempt, or that skipped the chunk, would show in the probe's rows."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from sqlalchemy import Connection, text

from matengine.config import get_settings
from matengine.db import bookkeeping
from matengine.db.identifiers import quote
from matengine.errors import BucketUnavailable, InvalidInput
from matengine.workflows import engine as wf
from matengine.workflows import params as wp
from matengine.workflows import runs
from matengine.workflows.engine import Step, StepContext

KIND = "probe_writes"
CHUNKS = 5  # chunk k writes k + 1 rows


@dataclass(frozen=True)
class ProbeParams(wp.WorkflowParams):
    KIND: ClassVar[str] = KIND
    probe: str = ""  # the probe table's name
    fault: str = ""  # where the fault happens: plan, chunk or finish
    # transient: once, then it works; lasting: transient every time; permanent: refused
    error: str = "transient"


class Faults:
    """What each run's pieces have met so far (attempts per place)."""

    lock = threading.Lock()
    attempts: ClassVar[dict[tuple[int, str], int]] = {}

    @classmethod
    def meet(cls, ctx: StepContext, where: str) -> None:
        p = ctx.parameters
        assert isinstance(p, ProbeParams)
        if p.fault != where.split(":")[0]:
            return
        with cls.lock:
            key = (ctx.run.id, where)
            cls.attempts[key] = cls.attempts.get(key, 0) + 1
            first = cls.attempts[key] == 1
        if p.error == "permanent":
            raise InvalidInput(f"probe refused at {where}")
        if first or p.error == "lasting":
            raise BucketUnavailable(f"probe store timed out at {where} (temporary)")


class ProbeStep(Step):
    key = "probe"

    def plan(self, ctx: StepContext) -> list[Any]:
        Faults.meet(ctx, "plan")
        return list(range(CHUNKS))

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        p = ctx.parameters
        assert isinstance(p, ProbeParams)
        conn.execute(
            text(f"INSERT INTO {quote(p.probe)} (chunk, n) SELECT :k, g FROM generate_series(0, :k) g"),
            {"k": spec},
        )
        if spec == 2:  # mid-run, after this chunk wrote its rows
            Faults.meet(ctx, "chunk:2")
        return spec + 1

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        Faults.meet(ctx, "finish")
        with ctx.engine.connect() as conn:
            rows = bookkeeping.chunk_rows(conn, ctx.run.id, step_index=ctx.step_index)
        return {"probe": {"rows": rows}}


@pytest.fixture
def probe(engine, monkeypatch):
    """The probe workflow registered, a probe table, and retries that wait milliseconds."""
    wf.WORKFLOWS[KIND] = lambda run: [ProbeStep()]
    wp.PARAMETERS[KIND] = ProbeParams
    monkeypatch.setenv("MATENGINE_INLINE_RETRY_WAIT", "0.01")
    monkeypatch.setenv("MATENGINE_INLINE_RETRIES", "3")
    get_settings.cache_clear()
    name = f"probe_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {quote(name)} (chunk int NOT NULL, n int NOT NULL)"))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {quote(name)}"))
    wf.WORKFLOWS.pop(KIND, None)
    wp.PARAMETERS.pop(KIND, None)
    monkeypatch.undo()
    get_settings.cache_clear()


def _run(engine, datastack: str, probe: str, fault: str, error: str = "transient") -> runs.Run:
    params = ProbeParams(datastack=datastack, probe=probe, fault=fault, error=error)
    run_id = runs.create_run(engine, KIND, params.to_json(), datastack=datastack)
    return wf.execute_inline(engine, run_id)


def _probe_rows(engine, probe: str) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT chunk, n FROM {quote(probe)} ORDER BY 1, 2"))]


EXPECTED = [(k, n) for k in range(CHUNKS) for n in range(k + 1)]


@pytest.mark.parametrize("fault", ["plan", "chunk", "finish"])
def test_a_transient_fault_once_mid_run_is_retried_and_the_run_is_exact(engine, datastack, probe, fault):
    run = _run(engine, datastack, probe, fault)
    assert run.state == "SUCCESS", run.errors
    assert _probe_rows(engine, probe) == EXPECTED  # every chunk's rows once, none twice
    assert run.result["probe"] == {"rows": len(EXPECTED)} and run.chunks_done == CHUNKS
    retried = [e for e in run.errors if e.get("transient")]
    assert len(retried) == 1 and "BucketUnavailable" in retried[0]["message"]
    assert Faults.attempts[(run.id, "chunk:2" if fault == "chunk" else fault)] == 2


def test_a_transient_fault_that_never_clears_fails_the_run_after_the_set_retries(engine, datastack, probe):
    run = _run(engine, datastack, probe, "chunk", error="lasting")
    assert run.state == "FAILED"
    assert run.errors[-1]["message"] == "probe store timed out at chunk:2 (temporary)"
    # retried three times (MATENGINE_INLINE_RETRIES), each retry recorded on the run
    assert len([e for e in run.errors if e.get("transient")]) == 3
    assert Faults.attempts[(run.id, "chunk:2")] == 4


def test_a_permanent_error_fails_the_run_at_once_with_its_message(engine, datastack, probe):
    run = _run(engine, datastack, probe, "chunk", error="permanent")
    assert run.state == "FAILED"
    assert run.errors[-1]["message"] == str(InvalidInput("probe refused at chunk:2"))
    assert not [e for e in run.errors if e.get("transient")]  # never retried
    assert Faults.attempts[(run.id, "chunk:2")] == 1
    assert (2, 0) not in _probe_rows(engine, probe)  # the refused chunk's rows rolled back


def test_with_the_default_settings_a_transient_fault_once_costs_one_short_wait(
    engine, datastack, probe, monkeypatch
):
    """The fixture shortens the waits; what a user gets (8 retries, 2 s doubling) must also
    finish a run whose chunk met one transient fault, after one wait of about 2 s."""
    import time

    monkeypatch.delenv("MATENGINE_INLINE_RETRY_WAIT")
    monkeypatch.delenv("MATENGINE_INLINE_RETRIES")
    get_settings.cache_clear()
    assert (get_settings().inline_retries, get_settings().inline_retry_wait) == (8, 2.0)
    t = time.monotonic()
    run = _run(engine, datastack, probe, "chunk")
    took = time.monotonic() - t
    assert run.state == "SUCCESS", run.errors
    assert _probe_rows(engine, probe) == EXPECTED
    assert len([e for e in run.errors if e.get("transient")]) == 1
    assert 1.5 <= took < 30, took
