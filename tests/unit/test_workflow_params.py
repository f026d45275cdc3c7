"""Typed workflow parameters: stored as the same JSON steps read, read back unchanged, and
carrying the run's lock scope."""

from __future__ import annotations

import dataclasses

import pytest

from matengine.errors import InvalidInput
from matengine.timeutil import utcnow
from matengine.workflows.bulk_upload import UploadParams
from matengine.workflows.params import PARAMETERS, SyncParams, parameters_of
from matengine.workflows.runs import Run


def _run(kind: str, parameters: dict) -> Run:
    now = utcnow()
    return Run(1, kind, "ds", None, parameters, "PENDING", None, [], {}, now, None, None)


def test_every_workflow_kind_has_a_parameter_class():
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows.engine import WORKFLOWS

    assert set(WORKFLOWS) == set(PARAMETERS)


@pytest.mark.parametrize(
    ("kind", "table", "lock"),
    [
        ("ingest", "syn", "syn"),
        ("update_roots", "syn", "syn"),
        ("materialize", "syn", None),
        ("complete", None, None),
    ],
)
def test_sync_parameters_round_trip_and_lock_scope(kind, table, lock):
    p = SyncParams("ds", ("syn",), "2026-01-01T00:00:00+00:00", 500, workflow=kind, table=table)
    stored = p.to_json()
    assert stored == {
        "tables": ["syn"],
        "timestamp": "2026-01-01T00:00:00+00:00",
        "chunk_rows": 500,
        "table": table,
    }
    back = parameters_of(_run(kind, stored))
    assert back == p and back.kind == kind and back.lock_table == lock


def test_scheduled_and_expiry_are_stored_when_set():
    p = SyncParams(
        "ds",
        ("a", "b"),
        "2026-01-01T00:00:00+00:00",
        10,
        workflow="complete",
        days_to_expire=0,
        scheduled=True,
    )
    assert p.to_json()["scheduled"] is True and p.to_json()["days_to_expire"] == 0
    assert parameters_of(_run("complete", p.to_json())) == p


def test_upload_parameters_round_trip_and_lock_their_table():
    p = UploadParams(
        "ds", "syn", "synapse", "file:///data", {"id": "id"}, 1000, voxel_resolution=(4.0, 4.0, 40.0)
    )
    stored = p.to_json()
    assert stored["datastack"] == "ds" and stored["voxel_resolution"] == [4.0, 4.0, 40.0]
    back = parameters_of(_run("bulk_upload", stored))
    assert back == p and back.kind == "bulk_upload" and back.lock_table == "syn"


def test_parameters_are_frozen():
    p = UploadParams("ds", "syn", "synapse", "file:///data", {"id": "id"}, 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.table = "other"  # type: ignore[misc]


def test_roots_tuning_is_stored_only_when_set_and_read_back_typed():
    p = SyncParams("ds", ("syn",), "2026-01-01T00:00:00+00:00", 500, workflow="update_roots")
    assert "roots_per_chunk" not in p.to_json() and "roots_plan" not in p.to_json()
    assert p.roots_per_chunk is None and p.roots_plan == "auto"
    tuned = dataclasses.replace(p, roots_per_chunk=10, roots_plan="rewrite")
    stored = tuned.to_json()
    assert stored["roots_per_chunk"] == 10 and stored["roots_plan"] == "rewrite"
    assert parameters_of(_run("update_roots", stored)) == tuned


def test_stored_parameters_extended_by_hand_are_read_back_typed():
    stored = SyncParams("ds", ("syn",), "2026-01-01T00:00:00+00:00", 500, workflow="complete").to_json()
    stored["roots_per_chunk"] = 10  # as tests and scripts add it to sync_parameters' dict
    back = parameters_of(_run("complete", stored))
    assert isinstance(back, SyncParams) and back.roots_per_chunk == 10


@pytest.mark.parametrize(
    ("field", "value"), [("roots_per_chunk", 0), ("roots_per_chunk", "10"), ("roots_plan", "fast")]
)
def test_bad_roots_tuning_is_refused_naming_the_field(field, value):
    stored = {"tables": ["syn"], "timestamp": "2026-01-01T00:00:00+00:00", "chunk_rows": 5, field: value}
    with pytest.raises(InvalidInput) as refused:
        parameters_of(_run("update_roots", stored))
    assert refused.value.field == field
