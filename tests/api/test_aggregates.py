"""Per-root aggregates (synapse counts per root, partner tables) at a version and at any T,
over the API and the CLI, against numpy group-bys of the expected rows (oracle roots)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import requests

from .helpers import days, expected_synapses


def _counts(df: pd.DataFrame, col: str) -> list[tuple[int, int]]:
    v = df[col].to_numpy()
    values, counts = np.unique(v[v != 0], return_counts=True)
    order = np.lexsort([values, -counts])
    return list(zip(values[order].tolist(), counts[order].tolist(), strict=True))


def _partners(df: pd.DataFrame, key: str, roots: list[int]) -> list[tuple[int, int, int]]:
    sel = df[df[key].isin(roots)]
    g = sel.groupby(["pre_pt_root_id", "post_pt_root_id"]).size().reset_index(name="n")
    g = g.sort_values(["n", "pre_pt_root_id", "post_pt_root_id"], ascending=[False, True, True])
    return [tuple(int(x) for x in r) for r in g.itertuples(index=False)]


def _get(server, loaded, path, params=None, body=None):
    url = f"{server.url}/materialize/api/v3/datastack/{loaded.datastack}/table/synapses/{path}"
    headers = {"Authorization": f"Bearer {server.tokens['view']}"}
    if body is None:
        return requests.get(url, params=params, headers=headers, timeout=60)
    return requests.post(url, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("side", ["pre", "post"])
def test_root_counts_at_a_version(server, loaded, side):
    want = _counts(expected_synapses(loaded.rows, loaded.oracle, loaded.versions[2]), f"{side}_pt_root_id")
    r = _get(server, loaded, "root_counts", {"version": 2, "side": side, "top": 5})
    assert r.status_code == 200, r.text
    got = r.json()
    assert list(zip(got["root_id"], got["count"], strict=True)) == want[:5]
    everything = _get(server, loaded, "root_counts", {"version": 2, "side": side, "top": 1_000_000}).json()
    assert sum(everything["count"]) == sum(n for _, n in want)


@pytest.mark.parametrize("offset", [5, 15, 35])
def test_root_counts_at_any_time(server, loaded, offset):
    t = loaded.start + days(offset)
    want = _counts(expected_synapses(loaded.rows, loaded.oracle, t), "post_pt_root_id")
    got = _get(
        server, loaded, "root_counts", {"timestamp": t.isoformat(), "side": "post", "top": 1000}
    ).json()
    assert list(zip(got["root_id"], got["count"], strict=True)) == want


@pytest.mark.parametrize("direction, key", [("out", "pre_pt_root_id"), ("in", "post_pt_root_id")])
def test_partners_at_a_version_and_at_t(server, loaded, direction, key):
    for where, df in (
        ({"version": 1}, expected_synapses(loaded.rows, loaded.oracle, loaded.versions[1])),
        (
            {"timestamp": (loaded.start + days(25)).isoformat()},
            expected_synapses(loaded.rows, loaded.oracle, loaded.start + days(25)),
        ),
    ):
        roots = [r for r, _ in _counts(df, key)[:2]]
        r = _get(server, loaded, "partners", body={"root_ids": roots, "direction": direction, **where})
        assert r.status_code == 200, r.text
        got = r.json()
        rows = list(zip(got["pre_pt_root_id"], got["post_pt_root_id"], got["count"], strict=True))
        assert rows == _partners(df, key, roots) and rows


@pytest.mark.parametrize(
    "params, body, message",
    [
        ({"side": "pre"}, None, "give a version or a timestamp"),
        ({"version": 1, "timestamp": "2024-01-01T00:00:00Z"}, None, "give a version or a timestamp"),
        ({"version": 1, "side": "left"}, None, "side is one of"),
        ({"version": 1, "top": 0}, None, "top is between"),
        (None, {"version": 1, "root_ids": []}, "non-empty list"),
        (None, {"version": 1, "root_ids": ["x"]}, "integers"),
        (None, {"version": 1, "root_ids": list(range(1, 10_002))}, "at most 10000"),
        (None, {"version": 1, "root_ids": [1], "direction": "up"}, "direction is"),
    ],
)
def test_bad_aggregate_requests_are_refused(server, loaded, params, body, message):
    r = _get(server, loaded, "partners" if body is not None else "root_counts", params, body)
    assert r.status_code == 400 and message in r.json()["message"]


def test_cli_root_counts_and_partners(loaded, database_url):
    from typer.testing import CliRunner

    from matengine.cli import app

    df = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[2])
    want = _counts(df, "pre_pt_root_id")
    runner = CliRunner()
    out = runner.invoke(
        app,
        ["aggregate", "root-counts", loaded.datastack, "synapses", "--version", "2", "--top", "3", "--json"],
    )
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert list(zip(got["root_id"], got["count"], strict=True)) == want[:3]
    root = want[0][0]
    out = runner.invoke(
        app,
        [
            "aggregate",
            "partners",
            loaded.datastack,
            "synapses",
            "--root",
            str(root),
            "--version",
            "2",
            "--json",
        ],
    )
    got = json.loads(out.output)
    rows = list(zip(got["pre_pt_root_id"], got["post_pt_root_id"], got["count"], strict=True))
    assert rows == _partners(df, "pre_pt_root_id", [root])


@pytest.mark.parametrize("offset", [3, 30])
def test_grouped_live_counts_equal_the_streamed_ones(engine, loaded, offset):
    """The two live paths (GROUP BY where stored roots are current, used when
    roots_last_updated is known; every root through the live engine otherwise) agree."""
    from matengine.query.aggregates import _live_columns, _live_root_counts

    t = loaded.start + days(offset)
    values, counts = _live_root_counts(engine, loaded.datastack, "synapses", t, "pre", None)
    roots = _live_columns(engine, loaded.datastack, "synapses", t, ["pre_pt_root_id"], {}, None)[
        "pre_pt_root_id"
    ]
    want_v, want_c = np.unique(roots[roots != 0], return_counts=True)
    assert values.tolist() == want_v.tolist() and counts.tolist() == want_c.tolist()
