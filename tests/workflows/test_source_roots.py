"""Bulk upload reads only under the configured source roots: no folder outside them, no
``..`` or absolute names in column_mapping, no loopback/private host unless an operator
names it, and errors that never quote what was read nor tell a closed port from a 404."""

from __future__ import annotations

import functools
import socket
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from matengine import catalog
from matengine.config import Settings
from matengine.errors import InvalidInput
from matengine.sources import check_file_name, check_source_url
from matengine.workflows.bulk_upload import check_request

from .test_upload_bad_input import good_arrays, params, write_folder


def _settings(tmp_path, roots: str = "", private: str = "") -> Settings:
    return Settings(home=tmp_path / "home", source_roots=roots, source_private_hosts=private)


def test_the_default_admits_only_the_demo_folder(tmp_path):
    s = _settings(tmp_path)
    check_source_url(f"file://{tmp_path}/home/demo/dataset/synapses", s)
    check_source_url(str(tmp_path / "home" / "demo"), s)
    for url in (f"file://{tmp_path}", "file:///etc", "gs://bucket/x", "https://example.org/x", "/etc"):
        with pytest.raises(InvalidInput, match="outside the configured source roots"):
            check_source_url(url, s)


def test_roots_compare_whole_segments(tmp_path):
    (tmp_path / "up").mkdir()
    s = _settings(tmp_path, f"{tmp_path}/up, gs://bucket/prefix, s3://lab-data")
    check_source_url(f"file://{tmp_path}/up/table1", s)
    check_source_url("gs://bucket/prefix/table1", s)
    check_source_url("s3://lab-data/any/where", s)
    for url in (
        f"file://{tmp_path}/upload2",
        "gs://bucket/prefix2/t",
        "gs://bucket/other",
        "gs://other/prefix/t",
        "s3://lab-data2/x",
    ):
        with pytest.raises(InvalidInput, match="outside the configured source roots"):
            check_source_url(url, s)


def test_dot_dot_and_symlinks_cannot_leave_a_root(tmp_path):
    root = tmp_path / "up"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    s = _settings(tmp_path, str(root))
    for url in (f"file://{root}/../other", f"{root}/a/../../x", "gs://b/p/%2e%2e/x"):
        with pytest.raises(InvalidInput, match="'..' segment"):
            check_source_url(url, _settings(tmp_path, f"{root},gs://b/p"))
    with pytest.raises(InvalidInput, match="outside the configured source roots"):
        check_source_url(f"file://{root}/escape", s)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://localhost/x", "http://169.254.169.254/latest", "http://10.1.2.3/x"],
)
def test_private_hosts_need_the_operator(tmp_path, url):
    root = url.rsplit("/", 1)[0]
    with pytest.raises(InvalidInput, match="loopback, link-local or private address"):
        check_source_url(url, _settings(tmp_path, root))
    host = url.split("/")[2].split(":")[0]
    check_source_url(url, _settings(tmp_path, root, private=host))


def test_credentials_in_a_url_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match="carries credentials"):
        check_source_url("https://user:pw@example.org/x", _settings(tmp_path, "https://example.org"))


@pytest.mark.parametrize("name", ["../ids", "/etc/passwd", "a/b", "..", "", "a\x00b", "x" * 300, 5])
def test_column_mapping_names_are_plain_file_names(name):
    with pytest.raises(InvalidInput, match="must be a plain name in the source folder"):
        check_file_name(name)


def test_column_mapping_with_dot_dot_is_refused_before_anything_is_read(engine, datastack, tmp_path):
    folder = write_folder(tmp_path / "f", good_arrays())
    p = params(datastack, folder, table=f"t_{uuid.uuid4().hex[:6]}")
    p["column_mapping"] = {"../f/ids": "id", **{k: v for k, v in p["column_mapping"].items() if v != "id"}}
    with pytest.raises(InvalidInput, match="'../f/ids' must be a plain name"):
        check_request(engine, p)
    assert catalog.list_tables(engine, datastack) == []


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture
def http_folder(tmp_path):
    """An http server whose ``x/id.npy`` is not an .npy file but a secret."""
    (tmp_path / "srv" / "x").mkdir(parents=True)
    (tmp_path / "srv" / "x" / "id.npy").write_bytes(b"SECRET-INTERNAL-CONTENT " * 20)
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(tmp_path / "srv"))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_never_quote_content_nor_tell_closed_ports(
    engine, datastack, tmp_path, http_folder, admit_sources
):
    closed = f"http://127.0.0.1:{_closed_port()}"
    admit_sources(http_folder, closed, private_hosts="127.0.0.1")
    base = params(datastack, tmp_path, table="t_src")
    base["column_mapping"] = {
        "id": "id",
        "pos": "pre_pt_position",
        "pos2": "ctr_pt_position",
        "pos3": "post_pt_position",
    }
    messages = {}
    for label, url in (
        ("not npy", f"{http_folder}/x"),
        ("404", f"{http_folder}/nothing"),
        ("closed", f"{closed}/x"),
    ):
        with pytest.raises(InvalidInput) as info:
            check_request(engine, {**base, "source": url})
        messages[label] = str(info.value).replace(url, "URL")
    assert "SECRET" not in messages["not npy"] and "id.npy is not a readable .npy file" in messages["not npy"]
    assert messages["404"] == messages["closed"]
    assert "missing file id.npy in URL (absent, or the store could not be read)" in messages["closed"]
    assert catalog.list_tables(engine, datastack) == []
