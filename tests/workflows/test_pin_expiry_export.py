"""Retention on the version store: expiry counts from the build, pinned versions never expire,
the CLI and every listing agree on what is expired; one version exported as plain tables."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text, update
from typer.testing import CliRunner

from matengine import auth
from matengine.cli import app
from matengine.db import metadata as m
from matengine.query import meta
from matengine.timeutil import utcnow
from matengine.versions import list_versions, remove_expired
from matengine.workflows.submit import sync_parameters

from .helpers import assert_same_rows, read_table, read_version, run_inline

runner = CliRunner()


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _cli_status(ds: str) -> dict[int, tuple[str, bool]]:
    return {v["version"]: (v["status"], v["pinned"]) for v in json.loads(_cli("versions", ds, "--json"))}


def _age(engine, ds: str, version: int, days: int) -> None:
    """As if ``days`` had passed since the version was built."""
    with engine.begin() as conn:
        conn.execute(
            update(m.versions)
            .where(m.versions.c.datastack == ds, m.versions.c.version == version)
            .values(expires_on=m.versions.c.expires_on - timedelta(days=days))
        )


def test_a_version_of_a_past_time_expires_from_its_build_and_pinned_ones_never(engine, loaded, synth):
    when = synth.edit_timestamps[20]  # T is long ago: the dataset's history
    assert utcnow() - when > timedelta(days=1)
    params = sync_parameters(engine, "complete", loaded, timestamp=when.isoformat(), days_to_expire=1)
    run_inline(engine, "complete", params, datastack=loaded)
    [v] = list_versions(engine, loaded)
    assert v.time_stamp == when and v.expires_on - v.finished == timedelta(days=1)
    assert [x.version for x in meta.list_versions(engine, loaded)] == [1]
    assert _cli_status(loaded) == {1: ("AVAILABLE", False)}
    run_inline(engine, "complete", params, datastack=loaded)
    _age(engine, loaded, 1, 2)
    # past its expiry: every listing says so, before any removal ran
    assert _cli_status(loaded) == {1: ("EXPIRED", False), 2: ("AVAILABLE", False)}
    assert [x.version for x in meta.list_versions(engine, loaded)] == [2]
    with pytest.raises(meta.Gone):
        meta.get_version(engine, loaded, 1)
    # pinned: answered again and kept by the policy
    assert "pinned" in _cli("versions", "pin", loaded, "1")
    assert _cli_status(loaded) == {1: ("AVAILABLE", True), 2: ("AVAILABLE", False)}
    assert [x.version for x in meta.list_versions(engine, loaded)] == [1, 2]
    assert remove_expired(engine, loaded, keep=1) == []
    _cli("versions", "unpin", loaded, "1")
    assert [(r.version, r.reason.split(" ")[0]) for r in remove_expired(engine, loaded, keep=1)] == [
        (1, "expired")
    ]
    assert _cli_status(loaded) == {1: ("EXPIRED", False), 2: ("AVAILABLE", False)}
    # an expired version cannot be pinned back
    result = runner.invoke(app, ["versions", "pin", loaded, "1"])
    assert result.exit_code != 0 and "only AVAILABLE ones pin" in str(result.exception or result.output)


def test_the_admin_route_pins_and_get_versions_metadata_shows_it(engine, loaded, synth):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    when = synth.edit_timestamps[20]
    run_inline(
        engine,
        "complete",
        sync_parameters(engine, "complete", loaded, timestamp=when.isoformat()),
        datastack=loaded,
    )
    tokens = {p: auth.create_token(engine, loaded, p, f"pin test {p}")[1] for p in ("view", "admin")}
    route = f"/admin/api/v1/datastack/{loaded}/version/1/pinned"
    with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
        admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['admin']}"})
        viewer = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tokens['view']}"})
        refused = viewer.put(route, json={"pinned": True})
        assert refused.status_code == 403
        bad = admin.put(route, json={"pinned": True, "also": "<b>x</b>"})
        assert bad.status_code == 422 and "<b>x</b>" not in bad.text
        assert (
            admin.put(f"/admin/api/v1/datastack/{loaded}/version/9/pinned", json={"pinned": True}).status_code
            == 404
        )
        assert list_versions(engine, loaded)[0].pinned is False  # nothing changed by the refusals
        r = admin.put(route, json={"pinned": True})
        assert r.status_code == 200 and r.json()["pinned"] is True
        listed = viewer.get(f"/materialize/api/v3/datastack/{loaded}/metadata").json()
        assert [(v["version"], v["pinned"]) for v in listed] == [(1, True)]
        assert admin.put(route, json={"pinned": False}).json()["pinned"] is False


def test_export_schema_writes_one_version_as_plain_indexed_tables(engine, loaded, synth, oracle):
    when = synth.edit_timestamps[40]
    run_inline(
        engine,
        "complete",
        sync_parameters(engine, "complete", loaded, timestamp=when.isoformat()),
        datastack=loaded,
    )
    target = f"exp_{uuid.uuid4().hex[:8]}"
    out = json.loads(_cli("versions", "export-schema", loaded, "1", "--schema", target, "--json"))
    assert out == {"schema": target, "tables": ["cells", "synapses"]}
    with engine.connect() as conn:
        kinds = dict(
            conn.execute(
                text(
                    "SELECT c.relname, c.relkind FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relkind IN ('r', 'v')"
                ),
                {"s": target},
            ).all()
        )
        indexes = conn.execute(
            text("SELECT count(*) FROM pg_indexes WHERE schemaname = :s AND tablename = 'synapses'"),
            {"s": target},
        ).scalar_one()
    assert kinds == {"cells": "r", "synapses": "r"} and indexes == 6  # 3 bbox, 2 roots, id
    got = read_table(engine, f'"{target}"."synapses"', "synapse")
    assert_same_rows(got, oracle.table_at("synapses", when))
    assert_same_rows(got, read_version(engine, loaded, 1, "synapses"))
    again = runner.invoke(app, ["versions", "export-schema", loaded, "1", "--schema", target])
    assert again.exit_code != 0 and "exists already" in str(again.exception or again.output)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{target}" CASCADE'))
