"""Export in space order (``order: space``): rows sorted and cut by a Morton key of the first
point, read back equal to the oracle; a box filter admits few row groups; rows without a
position are kept; reruns give the same bytes; a bad order is refused."""

from __future__ import annotations

import json
import uuid

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from sqlalchemy import text
from typer.testing import CliRunner
from workflows.helpers import TABLE_SCHEMAS

from matengine.db.identifiers import quote
from matengine.errors import InvalidInput
from matengine.export.source import (
    NULL_KEY,
    SPACE_BITS,
    SpaceKey,
    chunk_batches,
    layout_of,
    morton_key,
    plan_ranges,
    space_key,
)
from matengine.schemas import get_schema
from matengine.workflows import runs

from .helpers import assert_equals_oracle, duckdb_table, export

PRE = ("pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z")


def _keys(positions: np.ndarray, key: dict) -> list[int]:
    """The space key of each row, recomputed from the manifest's ``space_key`` alone."""
    top = (1 << key["bits_per_axis"]) - 1
    out = []
    for row in positions:
        if any(v is None or np.isnan(v) for v in row):
            out.append(key["null_key"])
            continue
        q = []
        for v, lo, hi in zip(row, key["low"], key["high"], strict=True):
            scale = (1 << key["bits_per_axis"]) / (hi - lo) if hi > lo else 0.0
            q.append(min(max(int(np.floor((v - lo) * scale)), 0), top))
        out.append(morton_key(*q))
    return out


def _row_groups(folder) -> list[dict[str, tuple]]:
    """Per row group of every file (in file order): column -> (min, max)."""
    out = []
    for path in sorted(folder.glob("part-*.parquet")):
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.names
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            out.append(
                {names[i]: (rg.column(i).statistics.min, rg.column(i).statistics.max) for i in range(3, 9)}
            )
    return out


def _admits_box(stats: dict[str, tuple], lo: np.ndarray, hi: np.ndarray) -> bool:
    return all(stats[c][0] <= hi[a] and stats[c][1] >= lo[a] for a, c in enumerate(PRE))


def test_the_space_key_sql_is_the_morton_interleave(engine):
    space = SpaceKey(("x", "y", "z"), (0.0, -5.0, 10.0), (100.0, 5.0, 10.0))
    rng = np.random.default_rng(0)
    points = [(0.0, -5.0, 10.0), (100.0, 5.0, 10.0), (None, 1.0, 10.0)]
    points += [
        (float(a), float(b), 10.0)
        for a, b in zip(rng.uniform(0, 100, 40), rng.uniform(-5, 5, 40), strict=True)
    ]
    values = ", ".join(
        f"(CAST(:x{i} AS float8), CAST(:y{i} AS float8), CAST(:z{i} AS float8))" for i in range(len(points))
    )
    params = {f"{a}{i}": p[k] for i, p in enumerate(points) for k, a in enumerate("xyz")}
    with engine.connect() as conn:
        got = (
            conn.execute(
                text(f"SELECT {space.sql(lambda n: f':{n}')} FROM (VALUES {values}) AS t(x, y, z)"),
                {**params, **space.params()},
            )
            .scalars()
            .all()
        )
    want = _keys(np.array(points, dtype=float), space.to_json())
    assert got == want
    assert got[0] == 0 and got[2] == NULL_KEY
    top = (1 << SPACE_BITS) - 1
    assert got[1] == morton_key(top, top, 0)  # x, y at their max; z has one value: cell 0


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_space_export_reads_back_equal_to_the_oracle(engine, versioned, oracle, tmp_path, fmt):
    ds, when = versioned
    export(engine, ds, f"file://{tmp_path}/out", fmt=fmt, chunk_rows=700, order="space")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["order"] == "space"
    con = duckdb.connect()
    for table in TABLE_SCHEMAS:
        glob = f"{tmp_path}/out/{table}/*.parquet"
        assert_equals_oracle(duckdb_table(con, glob), table, oracle, when)
        assert_equals_oracle(pl.scan_parquet(glob).collect().to_arrow(), table, oracle, when)
        if fmt == "delta":
            assert_equals_oracle(pl.read_delta(f"{tmp_path}/out/{table}").to_arrow(), table, oracle, when)
            assert len(DeltaTable(f"{tmp_path}/out/{table}").file_uris()) == len(
                manifest["tables"][table]["files"]
            )
    syn = manifest["tables"]["synapses"]
    assert syn["sorted_by"] == [f"morton({', '.join(PRE)})", "id"]
    assert syn["space_key"]["columns"] == list(PRE)
    assert len(syn["files"]) >= 4
    # the files, in order, hold the rows sorted by (key, id), keys recomputed from the manifest
    rows = pq.read_table(sorted((tmp_path / "out" / "synapses").glob("*.parquet")))
    positions = np.column_stack([rows.column(c).to_numpy() for c in PRE])
    order = list(zip(_keys(positions, syn["space_key"]), rows.column("id").to_pylist(), strict=True))
    assert order == sorted(order)
    want = oracle.table_at("synapses", when)["pre_pt_position"]
    assert syn["space_key"]["low"] == want.min(axis=0).tolist()
    assert syn["space_key"]["high"] == want.max(axis=0).tolist()


def test_a_box_reads_few_row_groups_in_space_order_and_one_root_in_root_order(
    engine, versioned, oracle, tmp_path
):
    ds, when = versioned
    export(engine, ds, f"file://{tmp_path}/space", tables=["synapses"], chunk_rows=100, order="space")
    export(engine, ds, f"file://{tmp_path}/root", tables=["synapses"], chunk_rows=100)
    space_groups = _row_groups(tmp_path / "space" / "synapses")
    root_groups = _row_groups(tmp_path / "root" / "synapses")
    want = oracle.table_at("synapses", when)
    pts = want["pre_pt_position"]
    side = pts.max(axis=0) - pts.min(axis=0)
    con = duckdb.connect()
    glob = f"{tmp_path}/space/synapses/*.parquet"
    space_hits, root_hits = [], []
    for center in pts[:: len(pts) // 20][:20]:  # 20 boxes around rows of the table: never empty
        lo, hi = center - side * 0.05, center + side * 0.05  # 10% of the side on each axis
        space_hits.append(sum(_admits_box(s, lo, hi) for s in space_groups))
        root_hits.append(sum(_admits_box(s, lo, hi) for s in root_groups))
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        where = " AND ".join(f"{c} BETWEEN {float(lo[a])!r} AND {float(hi[a])!r}" for a, c in enumerate(PRE))
        (n,) = con.execute(f"SELECT count(*) FROM read_parquet('{glob}') WHERE {where}").fetchone()
        assert n == int(inside.sum()) > 0
    assert len(space_groups) >= 20 and len(root_groups) >= 20  # root ranges never split a root
    space_share = np.array(space_hits) / len(space_groups)
    root_share = np.array(root_hits) / len(root_groups)
    assert space_share.mean() < 0.25, space_share
    assert space_share.mean() * 4 < root_share.mean(), (space_share.mean(), root_share.mean())
    # root order keeps its property: one root's rows in one row group
    roots, counts = np.unique(want["pre_pt_root_id"], return_counts=True)
    root = int(roots[np.argmax(counts)])
    assert sum(s["pre_pt_root_id"][0] <= root <= s["pre_pt_root_id"][1] for s in root_groups) == 1


def test_rerun_in_space_order_gives_the_same_files(engine, versioned, tmp_path):
    ds, _ = versioned
    export(engine, ds, f"file://{tmp_path}/out", chunk_rows=700, order="space")
    first = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    export(engine, ds, f"file://{tmp_path}/out", chunk_rows=700, order="space")
    second = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert first == second


def test_rows_without_a_position_are_kept_after_the_others(engine):
    """A table whose (optional) first point is absent in some rows: every row is exported
    once, those rows last."""
    layout = layout_of(get_schema("bound_tag"))
    schema = f"space_{uuid.uuid4().hex[:8]}"
    relation = quote(schema, "t")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {quote(schema)}"))
        conn.execute(
            text(
                f"CREATE TABLE {relation} AS SELECT g::bigint AS id, now() AS created, true AS valid, "
                "CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 37 % 101)::float8 END AS pt_position_x, "
                "(g * 53 % 97)::float8 AS pt_position_y, (g % 5)::float8 AS pt_position_z, "
                "g::bigint AS pt_supervoxel_id, (g % 9)::bigint AS pt_root_id, 't' || g AS tag "
                "FROM generate_series(1, 500) AS g"
            )
        )
    try:
        with engine.connect() as conn:
            space = space_key(conn, relation, layout)
            assert space is not None and space.columns == ("pt_position_x", "pt_position_y", "pt_position_z")
            ranges = plan_ranges(conn, relation, layout, 60, space)
            ids: list[int] = []
            xs: list[float | None] = []
            for lo, hi in ranges:
                for batch in chunk_batches(conn, relation, layout, lo, hi, space):
                    ids += batch.column("id").to_pylist()
                    xs += batch.column("pt_position_x").to_pylist()
        assert sorted(ids) == list(range(1, 501))
        nulls = [i for i in range(1, 501) if i % 7 == 0]
        assert ids[-len(nulls) :] == nulls and all(x is None for x in xs[-len(nulls) :])
        assert ranges[-1][1] == NULL_KEY
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {quote(schema)} CASCADE"))


def test_a_bad_order_is_refused_before_a_run(engine, versioned, tmp_path):
    from matengine.cli import app
    from matengine.workflows.export import export_parameters

    ds, _ = versioned
    before = len(runs.list_runs(engine, ds))
    with pytest.raises(InvalidInput) as err:
        export_parameters(engine, ds, 1, to=f"file://{tmp_path}/out", order="hilbert")
    assert str(err.value) == (
        "field 'order': order must be one of root, space (root: one root reads little; "
        "space: one box reads little)"
    )
    result = CliRunner().invoke(
        app, ["export", ds, "--version", "1", "--to", f"file://{tmp_path}/out", "--order", "z"]
    )
    assert result.exit_code != 0
    assert "order must be one of root, space" in (str(result.exception) + result.output)
    assert not (tmp_path / "out").exists()
    assert len(runs.list_runs(engine, ds)) == before
