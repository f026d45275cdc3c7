"""Version removal under the retention policy (fake clock), and the beat schedule tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text

from matengine import catalog
from matengine.db import metadata as m
from matengine.db.identifiers import quote, version_schema
from matengine.versions import Version, list_versions, plan_removals, remove_expired
from matengine.workflows import runs
from matengine.workflows.schedule import is_due, run_due

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _v(n: int, status: str = "AVAILABLE", expires: int | None = 10) -> Version:
    return Version(
        "ds",
        n,
        T0 + timedelta(days=n),
        status,
        status == "AVAILABLE",
        T0 + timedelta(days=expires) if expires is not None else None,
        T0,
        None,
        {},
    )


def test_policy_keeps_the_latest_valid_versions_and_drops_expired_and_failed():
    versions = [
        _v(1, expires=5),
        _v(2, expires=6),
        _v(3, "FAILED", None),
        _v(4, expires=7),
        _v(5, expires=30),
        _v(6, expires=None),
    ]
    now = T0 + timedelta(days=8)
    plan = plan_removals(versions, now, keep=2)
    assert [(r.version, r.reason.split(" ")[0]) for r in plan] == [
        (1, "expired"),
        (2, "expired"),
        (3, "failed"),
        (4, "expired"),
    ]
    # never the latest valid one, whatever keep says
    only = plan_removals([_v(1, expires=1)], T0 + timedelta(days=100), keep=0)
    assert only == []


def _fake_version(engine, ds: str, n: int, expires: datetime | None, status="AVAILABLE"):
    with engine.begin() as conn:
        conn.execute(
            insert(m.versions).values(
                datastack=ds,
                version=n,
                time_stamp=T0 + timedelta(days=n),
                status=status,
                valid=status == "AVAILABLE",
                expires_on=expires,
            )
        )
        conn.execute(text(f"CREATE SCHEMA {quote(version_schema(ds, n))}"))


def _schemas(engine, ds: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": f"{ds}\\_\\_mat%"}
            ).scalars()
        )


def test_remove_expired_drops_exactly_the_expected_versions(engine, datastack):
    for n in range(1, 6):
        _fake_version(engine, datastack, n, T0 + timedelta(days=n + 1))
    now = T0 + timedelta(days=4, hours=12)  # versions 1-3 expired
    dry = remove_expired(engine, datastack, dry_run=True, now=now, keep=2)
    assert [r.version for r in dry] == [1, 2, 3]
    assert len(_schemas(engine, datastack)) == 5
    done = remove_expired(engine, datastack, now=now, keep=2)
    assert [r.version for r in done] == [1, 2, 3]
    assert _schemas(engine, datastack) == {version_schema(datastack, 4), version_schema(datastack, 5)}
    status = {v.version: v.status for v in list_versions(engine, datastack)}
    assert status == {1: "EXPIRED", 2: "EXPIRED", 3: "EXPIRED", 4: "AVAILABLE", 5: "AVAILABLE"}
    with engine.connect() as conn:
        logged = conn.execute(
            select(m.version_removals.c.version, m.version_removals.c.reason)
            .where(m.version_removals.c.datastack == datastack)
            .order_by(m.version_removals.c.version)
        ).all()
    assert [v for v, _ in logged] == [1, 2, 3] and all("expired on" in r for _, r in logged)
    # later: 4 expires too, but two valid versions are always kept
    assert remove_expired(engine, datastack, now=T0 + timedelta(days=60), keep=2) == []


@pytest.mark.parametrize(
    ("expr", "last", "now", "due"),
    [
        ("0 3 * * *", None, T0.replace(hour=3, second=20), True),
        ("0 3 * * *", None, T0.replace(hour=3, minute=2), False),
        ("0 3 * * *", T0.replace(hour=3), T0.replace(hour=9), False),
        ("0 3 * * *", T0.replace(hour=3), T0 + timedelta(days=1, hours=3, seconds=5), True),
        ("*/10 * * * *", T0, T0 + timedelta(minutes=10), True),
    ],
)
def test_cron_schedule_is_due(expr, last, now, due):
    assert is_due(expr, last, now) is due


def test_tick_starts_due_complete_and_never_doubles_a_running_one(engine, datastack):
    from matengine.workflows.submit import wait_for

    catalog.create_table(engine, datastack, "syn", schema="synapse")
    catalog.set_schedule(engine, datastack, "* * * * *")
    now = datetime.now(UTC)
    [first] = run_due(engine, now=now)
    run = wait_for(engine, first, timeout=60)
    assert (run.kind, run.state, run.parameters["scheduled"]) == ("complete", "SUCCESS", True)
    assert run.result["version"] == 1
    # a minute later it is due again, but a run is still going on the datastack: not doubled
    busy = runs.create_run(engine, "complete", {"tables": ["syn"]}, datastack=datastack)
    assert run_due(engine, now=now + timedelta(minutes=1)) == []
    runs.finish_run(engine, busy, "CANCELLED")
    [second] = run_due(engine, now=now + timedelta(minutes=2))
    assert wait_for(engine, second, timeout=60).result["version"] == 2
    catalog.set_schedule(engine, datastack, None)
