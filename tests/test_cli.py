"""The ``matengine`` command line: every command has --help; data commands print JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from matengine.cli import app

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _commands(typer_app, prefix=()):
    import typer.main

    group = typer.main.get_command(typer_app)
    stack = [(prefix, group)]
    while stack:
        path, cmd = stack.pop()
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            stack.append((path + (name,), sub))


@pytest.mark.parametrize("path", list(_commands(app)))
def test_every_command_has_help(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_datastack_and_table_round_trip(database_url):
    out = _run(
        "datastack",
        "add",
        "cli_ds",
        "--segmentation-source",
        "precomputed://file:///nowhere",
        "--voxel-resolution",
        "4,4,40",
        "--json",
    )
    assert json.loads(out.stdout)["voxel_resolution"] == [4.0, 4.0, 40.0]
    listed = json.loads(_run("datastack", "list", "--json").stdout)
    assert "cli_ds" in [d["name"] for d in listed]
    _run("table", "create", "cli_ds", "syn", "--schema", "synapse", "--json")
    tables = json.loads(_run("table", "list", "cli_ds", "--json").stdout)
    assert [(t["table_name"], t["schema_type"], t["live_rows"]) for t in tables] == [("syn", "synapse", 0)]


def test_unknown_schema_is_a_clean_error(database_url):
    _run(
        "datastack",
        "add",
        "cli_ds2",
        "--segmentation-source",
        "precomputed://file:///nowhere",
        "--voxel-resolution",
        "4,4,40",
    )
    result = runner.invoke(app, ["table", "create", "cli_ds2", "t", "--schema", "nope"])
    assert result.exit_code != 0
    assert "unknown schema 'nope'" in str(result.exception)


def test_token_for_a_user_and_table_permissions_from_the_cli(engine, datastack):
    from matengine import auth, catalog

    out = json.loads(
        _run(
            "token", "create", "--datastack", datastack, "--permission", "edit",
            "--user", "cli_user", "--group", "g1", "--group", "g2", "--json",
        ).output
    )  # fmt: skip
    assert (out["user"], out["groups"]) == ("cli_user", ["g1", "g2"])
    assert auth.groups_of(engine, "cli_user") == {"g1", "g2"}
    listed = json.loads(_run("token", "list", "--json").output)
    assert next(t for t in listed if t["id"] == out["id"])["user"] == "cli_user"
    _run(
        "table", "create", datastack, "t_cli", "--schema", "bound_tag",
        "--read-permission", "GROUP", "--write-permission", "PRIVATE", "--owner", "cli_user",
    )  # fmt: skip
    t = catalog.get_table(engine, datastack, "t_cli")
    assert (t.read_permission, t.write_permission, t.owner) == ("GROUP", "PRIVATE", "cli_user")
    result = runner.invoke(
        app, ["table", "create", datastack, "t_bad", "--schema", "bound_tag", "--read-permission", "ALL"]
    )
    assert result.exit_code != 0 and "read_permission must be one of PRIVATE, GROUP, PUBLIC" in str(
        result.exception
    )
    result = runner.invoke(
        app, ["token", "create", "--datastack", datastack, "--permission", "view", "--group", "g"]
    )
    assert result.exit_code != 0 and "give --user with --group" in str(result.exception)


def test_derived_spatial_point_table_from_the_cli(datastack):
    _run("table", "create", datastack, "dsp_cli", "--schema", "derived_spatial_point")
    rows = [
        {"position": [1, 2, 3], "dependent_chunk": 5, "level": 1},
        {"position": [4, 5, 6], "dependent_chunk": 6},
    ]
    result = runner.invoke(
        app, ["annotations", "insert", datastack, "dsp_cli", "-", "--json"], input=json.dumps(rows)
    )
    assert result.exit_code == 0, result.output
    ids = json.loads(result.stdout)
    got = json.loads(
        _run("annotations", "get", datastack, "dsp_cli", ",".join(map(str, ids)), "--json").stdout
    )
    assert [(g["position"], g["dependent_chunk"], g["level"]) for g in got] == [
        ([1, 2, 3], 5, 1),
        ([4, 5, 6], 6, None),
    ]
    tables = json.loads(_run("table", "list", datastack, "--json").stdout)
    assert ("dsp_cli", "derived_spatial_point", 2) in [
        (t["table_name"], t["schema_type"], t["live_rows"]) for t in tables
    ]
