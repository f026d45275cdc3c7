"""Export to gs:// (a local GCS emulator) and s3:// (a local moto server), read back from the
bucket by DuckDB and polars and compared with the oracle row by row."""

from __future__ import annotations

import socket
import uuid

import duckdb
import fsspec
import polars as pl
import pyarrow.dataset as pads
import pytest
from workflows.helpers import TABLE_SCHEMAS

from .helpers import assert_equals_oracle, export, manifest_of


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gcs(monkeypatch, tmp_path):
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    bucket = f"matengine-{uuid.uuid4().hex[:8]}"
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    # gcsfs sends every request to the emulator named here, anonymously
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HOME", str(tmp_path))
    fsspec.filesystem("gs").clear_instance_cache()
    yield bucket
    fsspec.filesystem("gs").clear_instance_cache()
    server.stop()


@pytest.fixture
def s3(monkeypatch, tmp_path):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"matengine-{uuid.uuid4().hex[:8]}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # botocore (under s3fs) and delta-rs both read it
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    fsspec.filesystem("s3").clear_instance_cache()
    yield bucket, endpoint
    fsspec.filesystem("s3").clear_instance_cache()
    server.stop()


def _read_back(fs, root: str, oracle, when) -> None:
    con = duckdb.connect()
    con.register_filesystem(fs)
    for table in TABLE_SCHEMAS:
        scheme = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        got = con.sql(f"SELECT * FROM read_parquet('{scheme}://{root}/{table}/*.parquet')").to_arrow_table()
        assert_equals_oracle(got, table, oracle, when)
        dataset = pads.dataset(f"{root}/{table}", filesystem=fs, format="parquet")
        assert_equals_oracle(pl.scan_pyarrow_dataset(dataset).collect().to_arrow(), table, oracle, when)


def test_parquet_export_to_gs(engine, versioned, oracle, gcs, admit_sources):
    admit_sources(f"gs://{gcs}/exports")
    ds, when = versioned
    run = export(engine, ds, f"gs://{gcs}/exports/v1", chunk_rows=700)
    assert run.result["export"]["manifest"] == f"gs://{gcs}/exports/v1/manifest.json"
    fs = fsspec.filesystem("gs")
    _read_back(fs, f"{gcs}/exports/v1", oracle, when)
    manifest = manifest_of(fs, f"{gcs}/exports/v1")
    assert set(manifest["tables"]) == set(TABLE_SCHEMAS)


def test_delta_export_to_s3(engine, versioned, oracle, s3, admit_sources):
    bucket, endpoint = s3
    admit_sources(f"s3://{bucket}/exports")
    ds, when = versioned
    export(engine, ds, f"s3://{bucket}/exports/v1", fmt="delta", chunk_rows=700)
    fs = fsspec.filesystem("s3")
    _read_back(fs, f"{bucket}/exports/v1", oracle, when)
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    for table in TABLE_SCHEMAS:
        got = pl.read_delta(f"s3://{bucket}/exports/v1/{table}", storage_options=options).to_arrow()
        assert_equals_oracle(got, table, oracle, when)
