"""Export helpers: run an export, read it back with DuckDB and polars in the oracle's shape."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pyarrow as pa
from workflows.helpers import TABLE_SCHEMAS, assert_same_rows, run_inline

from matengine.synth.verify import columns_from_arrow
from matengine.workflows.export import export_lock, export_parameters


def export(engine, datastack: str, to: str, fmt: str = "parquet", **kw):
    params = export_parameters(engine, datastack, 1, to=to, fmt=fmt, **kw)
    return run_inline(engine, "export", params, datastack=datastack, table=export_lock(1))


def duckdb_table(con: duckdb.DuckDBPyConnection, glob: str) -> pa.Table:
    return con.sql(f"SELECT * FROM read_parquet('{glob}')").to_arrow_table()


def polars_table(source) -> pa.Table:
    return source.collect().to_arrow()


def assert_equals_oracle(table: pa.Table, name: str, oracle, when) -> None:
    got = columns_from_arrow(table, TABLE_SCHEMAS[name])
    assert_same_rows(got, oracle.table_at(name, when))


def manifest_of(fs, root: str) -> dict:
    with fs.open(f"{root}/manifest.json", "rb") as f:
        return json.loads(f.read())


__all__ = ["pl", "duckdb", "export", "duckdb_table", "polars_table", "assert_equals_oracle", "manifest_of"]
