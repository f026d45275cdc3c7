"""Bulk upload from every kind of bucket cloud-files reads: file:// (through the CLI), gs://
(a local GCS emulator), s3:// (a local moto server) and http:// (a range-capable server that
logs what it serves). Each upload must equal the ``.npy`` files row by row, and no read may
download a whole file: rows come by byte range."""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from matengine import catalog
from matengine.errors import InvalidInput
from matengine.workflows.bulk_upload import check_request

from .helpers import TABLE_SCHEMAS, assert_same_rows, read_table, run_inline, upload_params

CHUNK_ROWS = 700  # upload_params' chunk size: the synth synapses (3000 rows) make 5 chunks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tree(synth, tmp_path_factory) -> Path:
    """What every bucket holds: both synth tables, and ``broken/``, the synapse files with
    ``sizes.npy`` cut short (bigger than the header probe, so only the store knows its size)."""
    root = tmp_path_factory.mktemp("bucket")
    for folder in (*TABLE_SCHEMAS, "broken"):
        source = synth.directory / ("synapses" if folder == "broken" else folder)
        (root / folder).mkdir()
        for path in source.glob("*.npy"):
            (root / folder / path.name).write_bytes(path.read_bytes())
    sizes = root / "broken" / "sizes.npy"
    sizes.write_bytes(sizes.read_bytes()[:-100])
    return root


def _npy_files(tree: Path) -> dict[str, Path]:
    """``folder/name.npy`` -> local path."""
    return {str(p.relative_to(tree)): p for p in sorted(tree.glob("*/*.npy"))}


def refuses_bad_files(engine, datastack: str, synth, source_of) -> None:
    """Through any store: a missing file and a truncated one are named by check_request."""
    p = upload_params(datastack, synth.directory, "synapses", synth.start.isoformat(), None)
    p["source"] = source_of("synapses")
    p["column_mapping"] = {**p["column_mapping"], "nothere": "size"}
    p["column_mapping"].pop("sizes")
    with pytest.raises(InvalidInput, match=re.escape(f"missing file nothere.npy in {p['source']}")):
        check_request(engine, p)
    p = upload_params(datastack, synth.directory, "synapses", synth.start.isoformat(), None)
    p["source"] = source_of("broken")
    with pytest.raises(InvalidInput, match="sizes.npy is shorter than its header says"):
        check_request(engine, p)
    assert catalog.list_tables(engine, datastack) == []


def upload_and_compare(engine, datastack: str, synth, oracle, source_of) -> None:
    """Upload both synth tables from ``source_of(table)``; the tables must equal the files."""
    start = synth.start.isoformat()
    for table, schema in TABLE_SCHEMAS.items():
        roots = synth.initial_timestamp.isoformat() if table == "synapses" else None
        p = upload_params(datastack, synth.directory, table, start, roots)
        p["source"] = source_of(table)
        check_request(engine, p)
        run = run_inline(engine, "bulk_upload", p, datastack=datastack, table=table)
        want = oracle.base_rows(table)
        assert run.rows_done == len(want["id"])
        t = catalog.get_table(engine, datastack, table)
        got = read_table(engine, t.names.live_q, schema, t.names.segmentation_q)
        order = want["id"].argsort()
        assert_same_rows({k: got[k] for k in want}, {k: v[order] for k, v in want.items()})


# ------------------------------------------------------------------ file:// through the CLI


def test_upload_from_file_url_through_the_cli(engine, datastack, synth, oracle, tree):
    from matengine.cli import app

    refuses_bad_files(engine, datastack, synth, lambda folder: f"file://{tree / folder}")

    runner = CliRunner()
    for table, schema in TABLE_SCHEMAS.items():
        folder = synth.directory / table
        args = [
            "upload",
            datastack,
            table,
            "--schema",
            schema,
            "--source",
            f"file://{folder}",
            "--column-mapping",
            str(folder / "column_mapping.json"),
            "--chunk-rows",
            str(CHUNK_ROWS),
            "--created",
            synth.start.isoformat(),
            "--json",
        ]
        if table == "synapses":
            args += ["--roots-timestamp", synth.initial_timestamp.isoformat()]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        want = oracle.base_rows(table)
        assert record["state"] == "SUCCESS" and record["kind"] == "bulk_upload"
        assert record["rows_done"] == len(want["id"])
        assert record["result"]["rows"] == len(want["id"])
        t = catalog.get_table(engine, datastack, table)
        got = read_table(engine, t.names.live_q, schema, t.names.segmentation_q)
        order = want["id"].argsort()
        assert_same_rows({k: got[k] for k in want}, {k: v[order] for k, v in want.items()})
    # roots given with the upload are valid at the time the CLI was told
    syn = catalog.get_table(engine, datastack, "synapses")
    assert syn.roots_last_updated == synth.initial_timestamp


# ------------------------------------------------------------------ gs:// on a GCS emulator


@pytest.fixture(scope="module")
def gcs_bucket(tree):
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = _free_port()
    bucket = f"matengine-{uuid.uuid4().hex[:8]}"
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    for key, path in _npy_files(tree).items():
        client.bucket(bucket).blob(f"synth/{key}").upload_from_filename(str(path))
    yield endpoint, bucket
    server.stop()


def test_upload_from_gs(engine, datastack, synth, oracle, gcs_bucket, monkeypatch, tmp_path, admit_sources):
    endpoint, bucket = gcs_bucket
    admit_sources(f"gs://{bucket}/synth")
    # google-cloud-storage (under cloud-files) sends every request to the emulator named by
    # STORAGE_EMULATOR_HOST, with anonymous credentials
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    monkeypatch.setenv("HOME", str(tmp_path))
    source_of = lambda folder: f"gs://{bucket}/synth/{folder}"  # noqa: E731
    refuses_bad_files(engine, datastack, synth, source_of)
    upload_and_compare(engine, datastack, synth, oracle, source_of)


# ------------------------------------------------------------------ s3:// on a moto server


@pytest.fixture(scope="module")
def s3_bucket(tree):
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"matengine-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    s3.create_bucket(Bucket=bucket)
    for key, path in _npy_files(tree).items():
        s3.upload_file(str(path), bucket, f"synth/{key}")
    yield endpoint, bucket
    server.stop()


def test_upload_from_s3(engine, datastack, synth, oracle, s3_bucket, monkeypatch, tmp_path, admit_sources):
    endpoint, bucket = s3_bucket
    # the moto server listens on loopback: the test names it as an allowed private host
    admit_sources(f"s3://{endpoint}/{bucket}/synth", private_hosts="127.0.0.1")
    # cloud-files takes an S3-compatible endpoint in the path (s3://http://host:port/bucket/…)
    # and credentials from ~/.cloudvolume/secrets/aws-secret.json or the environment; it wants
    # all three of key id, secret and session token there
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    source_of = lambda folder: f"s3://{endpoint}/{bucket}/synth/{folder}"  # noqa: E731
    refuses_bad_files(engine, datastack, synth, source_of)
    upload_and_compare(engine, datastack, synth, oracle, source_of)


# ------------------------------------------------------------------ http:// with byte ranges


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    range: str | None
    status: int
    nbytes: int


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single byte ranges (RFC 9110 §14), logging every answer."""

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    def _record(self, status: int, nbytes: int) -> None:
        self.server.served.append(Served(self.command, self.path, self.headers.get("Range"), status, nbytes))

    def do_HEAD(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return self._record(404, 0)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._record(200, 0)

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(HTTPStatus.NOT_FOUND)
            return self._record(404, 0)
        size = os.path.getsize(path)
        first, last, status = 0, size - 1, HTTPStatus.OK
        wanted = self.headers.get("Range")
        if wanted:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if m is None or m.groups() == ("", ""):
                self.send_error(HTTPStatus.BAD_REQUEST)
                return self._record(400, 0)
            a, b = m.groups()
            if a == "":  # suffix: the last b bytes
                first = max(0, size - int(b))
            else:
                first, last = int(a), min(size - 1, int(b)) if b else size - 1
            if first >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return self._record(416, 0)
            status = HTTPStatus.PARTIAL_CONTENT
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {first}-{first + len(data) - 1}/{size}")
        self.end_headers()
        self.wfile.write(data)
        self._record(int(status), len(data))


@pytest.fixture
def http_root(tree):
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(tree)))
    server.served = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.served
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_range_server_answers_like_a_bucket(http_root):
    """The server the next test relies on: ranges, clamped ends, 416 past the end, 404."""
    import requests

    url, served = http_root
    r = requests.get(f"{url}/cells/id.npy", headers={"Range": "bytes=0-9"}, timeout=5)
    assert r.status_code == 206 and len(r.content) == 10
    r = requests.get(f"{url}/cells/id.npy", headers={"Range": "bytes=100-99999"}, timeout=5)
    assert r.status_code == 206 and r.headers["Content-Range"].startswith("bytes 100-")
    r = requests.get(f"{url}/cells/id.npy", headers={"Range": "bytes=99999-"}, timeout=5)
    assert r.status_code == 416
    assert requests.get(f"{url}/cells/nope.npy", timeout=5).status_code == 404


def test_upload_from_http_reads_byte_ranges(engine, datastack, synth, oracle, http_root, admit_sources):
    from matengine.workflows.npy_source import _HEADER_PROBE

    url, served = http_root
    admit_sources(url, private_hosts="127.0.0.1")
    refuses_bad_files(engine, datastack, synth, lambda folder: f"{url}/{folder}")
    served.clear()
    upload_and_compare(engine, datastack, synth, oracle, lambda table: f"{url}/{table}")

    gets = [s for s in served if s.method == "GET"]
    assert gets and all(s.status == 206 and s.range for s in gets), [
        s for s in gets if s.status != 206 or not s.range
    ]
    mapping = json.loads((synth.directory / "synapses" / "column_mapping.json").read_text())
    # ids, coordinates and uint64 files (range-checked against bigint) are scanned
    scanned = {
        f
        for f, col in mapping.items()
        if col == "id"
        or str(col).endswith("_position")
        or np.load(synth.directory / "synapses" / f"{f}.npy", mmap_mode="r").dtype.kind == "u"
    }
    for name in mapping:
        path = synth.directory / "synapses" / f"{name}.npy"
        arr = np.load(path, mmap_mode="r")
        offset, size = arr.offset, path.stat().st_size
        row_bytes = arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        mine = [s for s in gets if s.path == f"/synapses/{name}.npy"]
        # no request ever got the whole file
        assert all(s.nbytes < size for s in mine), name
        # every chunk of the plan was read as exactly its own byte range
        ranges = {s.range for s in mine}
        for a in range(0, len(arr), CHUNK_ROWS):
            b = min(len(arr), a + CHUNK_ROWS)
            assert f"bytes={offset + a * row_bytes}-{offset + b * row_bytes - 1}" in ranges, (name, a, b)
        # beyond the header probe and chunk reads, only the plan's validation pass over ids and
        # coordinates reads more than a chunk (in slices of SCAN_ROWS rows)
        bound = max(_HEADER_PROBE, CHUNK_ROWS * row_bytes)
        larger = [s for s in mine if s.nbytes > bound]
        assert len(larger) <= (1 if name in scanned else 0), (name, larger)
