"""Views in exports: one dataset per view of the version, in the manifest, read back by DuckDB
and polars equal to querying the view at that version (our query path) and to the oracle;
the definition exported is the one in force when the version was made."""

from __future__ import annotations

import duckdb
import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from workflows.helpers import run_inline

from matengine import views
from matengine.export.views import view_at
from matengine.query.views import view_query
from matengine.workflows.export import export_lock, export_parameters
from matengine.workflows.submit import sync_parameters

from .helpers import duckdb_table, manifest_of

BIG = {
    "tables": ["synapses"],
    "filters": {"filter_greater_dict": {"synapses": {"size": 300}}},
    "select_columns": ["id", "pre_pt_root_id", "pre_pt_position", "size"],
    "rename": {"pre_pt_root_id": "pre_root", "pre_pt_position": "pre_position"},
}
TYPED = {
    "tables": [["synapses", "post_pt_root_id"], ["cells", "pt_root_id"]],
    "suffixes": {"synapses": "", "cells": "_cell"},
    "select_columns": {"synapses": ["id", "post_pt_root_id", "size"], "cells": ["id", "cell_type"]},
}


@pytest.fixture(scope="module")
def with_views(engine, versioned, synth):
    """Version 2 of the shared datastack, made after two views were defined; then ``big`` is
    redefined (only the new definition's threshold differs): (datastack, version, T)."""
    ds, _ = versioned
    views.define_view(engine, ds, "big", BIG, "synapses larger than 300")
    views.define_view(engine, ds, "typed", TYPED, "synapses onto typed cells")
    when = sorted(synth.edit_timestamps)[60]
    params = sync_parameters(engine, "complete", ds, timestamp=when.isoformat(), days_to_expire=365_000)
    version = int(run_inline(engine, "complete", params, datastack=ds).result["version"])
    later = {**BIG, "filters": {"filter_greater_dict": {"synapses": {"size": 900}}}}
    views.define_view(engine, ds, "big", later, "redefined after the version")
    views.define_view(engine, ds, "late", BIG, "defined after the version: not in it")
    return ds, version, when


def _export(engine, ds: str, version: int, to: str, **kw):
    params = export_parameters(engine, ds, version, to=to, **kw)
    return run_inline(engine, "export", params, datastack=ds, table=export_lock(version))


def _queried(engine, ds: str, version: int, name: str) -> pa.Table:
    return view_query(engine, view_at(engine, ds, version, name), {}, version=version).to_table()


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def test_every_view_of_the_version_is_exported_equal_to_querying_it(engine, with_views, oracle, tmp_path):
    ds, version, when = with_views
    run = _export(engine, ds, version, f"file://{tmp_path}/out", chunk_rows=700)
    rows = run.result["export"]["rows"]
    assert set(rows) == {"synapses", "cells", "big", "typed"}  # not "late"
    con = duckdb.connect()
    for name, keys in (("big", ["id"]), ("typed", ["id", "id_cell"])):
        want = _sorted(_queried(engine, ds, version, name), keys)
        assert rows[name] == want.num_rows > 0
        got = duckdb_table(con, f"{tmp_path}/out/{name}/*.parquet")
        assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema]
        assert _sorted(got, keys).cast(want.schema).equals(want)
        polars = pl.scan_parquet(f"{tmp_path}/out/{name}/*.parquet").collect().to_arrow()
        assert _sorted(polars, keys).cast(want.schema).equals(want)
    # the view at the version against the oracle: its definition of then (size > 300)
    syn = oracle.table_at("synapses", when)
    keep = syn["size"] > 300
    big = _sorted(duckdb_table(con, f"{tmp_path}/out/big/*.parquet"), ["id"])
    assert big.column("id").to_numpy().tolist() == syn["id"][keep].tolist()
    assert big.column("pre_root").to_numpy().tolist() == syn["pre_pt_root_id"][keep].astype(np.int64).tolist()
    assert big.column("pre_position_x").to_numpy().tolist() == syn["pre_pt_position"][keep][:, 0].tolist()
    manifest = manifest_of(fsspec.filesystem("file"), f"{tmp_path}/out")
    entry = manifest["views"]["big"]
    assert entry["definition"]["filters"] == BIG["filters"]
    assert entry["view_of"] == ["synapses"] and entry["sorted_by"] == ["id"]
    assert entry["rows"] == sum(f["rows"] for f in entry["files"]) == rows["big"]
    assert len(manifest["views"]["typed"]["files"]) >= 4  # cut by the synapses' id, 700 a file
    assert manifest["views"]["typed"]["sorted_by"] == ["id"]


def test_tables_may_name_a_view_and_delta_reads_it_back(engine, with_views, tmp_path):
    ds, version, _ = with_views
    _export(engine, ds, version, f"file://{tmp_path}/out", fmt="delta", tables=["typed"], chunk_rows=700)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".matengine-export",
        "manifest.json",
        "typed",
    ]
    want = _sorted(_queried(engine, ds, version, "typed"), ["id", "id_cell"])
    got = pl.read_delta(f"{tmp_path}/out/typed").to_arrow()
    assert _sorted(got, ["id", "id_cell"]).cast(want.schema).equals(want)
    assert len(DeltaTable(f"{tmp_path}/out/typed").file_uris()) >= 4


def test_a_view_not_in_the_version_is_refused(engine, with_views):
    ds, version, _ = with_views
    with pytest.raises(Exception, match="late"):
        export_parameters(engine, ds, version, to="file:///x", tables=["late"])


def test_a_view_export_rerun_gives_the_same_files(engine, with_views, tmp_path):
    ds, version, _ = with_views
    _export(engine, ds, version, f"file://{tmp_path}/out", tables=["typed", "big"], chunk_rows=700)
    first = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    _export(engine, ds, version, f"file://{tmp_path}/out", tables=["typed", "big"], chunk_rows=700)
    second = {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert first == second
