"""``matengine query`` (the same engine in-process) and ``matengine token``."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from typer.testing import CliRunner

from matengine import auth
from matengine.cli import app
from matengine.errors import InvalidInput

from .helpers import assert_frame_matches, days, expected_synapses

runner = CliRunner()


def _ok(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_token_create_list_revoke(engine, loaded):
    out = json.loads(
        _ok(
            "token",
            "create",
            "--datastack",
            loaded.datastack,
            "--permission",
            "edit",
            "--description",
            "cli test",
            "--json",
        ).stdout
    )
    assert out["token"].startswith("me_") and out["permission"] == "edit"
    principal = auth.authenticate(engine, out["token"])
    assert principal.allows(loaded.datastack, "view") and not principal.allows(loaded.datastack, "admin")
    listed = json.loads(_ok("token", "list", "--json").stdout)
    assert any(t["id"] == out["id"] for t in listed)
    assert all("token" not in t and "token_sha256" not in t for t in listed)
    _ok("token", "revoke", str(out["id"]))
    with pytest.raises(auth.Unauthorized):
        auth.authenticate(engine, out["token"])
    bad = runner.invoke(app, ["token", "create", "--datastack", "*", "--permission", "root"])
    assert bad.exit_code != 0 and "unknown permission" in str(bad.exception)


def test_query_version_json(loaded):
    want = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[1])
    root = int(want["pre_pt_root_id"].value_counts().index[0])
    res = _ok(
        "query",
        loaded.datastack,
        "synapses",
        "--version",
        "1",
        "--filter-in",
        f"pre_pt_root_id={root}",
        "--json",
    )
    rows = json.loads(res.stdout)
    assert sorted(r["id"] for r in rows) == want[want.pre_pt_root_id == root]["id"].tolist()


def test_query_timestamp_arrow_and_bbox_csv(loaded, tmp_path):
    t = loaded.start + days(17)
    want = expected_synapses(loaded.rows, loaded.oracle, t)
    out = tmp_path / "rows.arrow"
    _ok("query", loaded.datastack, "synapses", "--timestamp", t.isoformat(), "--arrow", str(out))
    df = pa.ipc.open_file(str(out)).read_pandas()
    assert_frame_matches(df, want)

    csv = tmp_path / "rows.csv"
    _ok(
        "query",
        loaded.datastack,
        "synapses",
        "--bbox",
        "400,500,20,700,800,40",
        "--bbox-column",
        "post_pt_position",
        "--select",
        "id,post_pt_position",
        "--limit",
        "5",
        "--csv",
        str(csv),
    )
    got = pa_csv.read_csv(str(csv)).to_pandas()
    latest = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[max(loaded.versions)])
    inside = latest[
        (latest.post_pt_position_x.between(400, 700))
        & (latest.post_pt_position_y.between(500, 800))
        & (latest.post_pt_position_z.between(20, 40))
    ]
    assert got["id"].tolist() == inside["id"].tolist()[:5]
    assert list(got.columns) == ["id", "post_pt_position_x", "post_pt_position_y", "post_pt_position_z"]


def test_query_bad_input_names_the_field(loaded):
    res = runner.invoke(app, ["query", loaded.datastack, "synapses", "--filter-equal", "nosuch=1", "--json"])
    assert isinstance(res.exception, InvalidInput) and "nosuch" in str(res.exception)
    res = runner.invoke(
        app,
        [
            "query",
            loaded.datastack,
            "synapses",
            "--bbox",
            "1,2,3",
            "--bbox-column",
            "pre_pt_position",
            "--json",
        ],
    )
    assert res.exit_code != 0 and "--bbox" in res.output
