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
