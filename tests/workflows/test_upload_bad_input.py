"""Bulk upload refuses every bad input before anything is written (docs/design.md §5, §9).

Each case asserts the message names the file / column / row at fault, and that the database is
as it was: the table absent (or its rows, id sequence and catalog entry unchanged), and no
chunk marker written. Header checks are caught by the synchronous ``check_request`` (what the
CLI and API call before recording a run) and again by the run's plan; the data checks (ids,
coordinates) are made by the plan's scan, so there the run ends FAILED with the message.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from matengine import catalog
from matengine.errors import InvalidInput, MatengineError, NotFound
from matengine.workflows import runs
from matengine.workflows.bulk_upload import check_request
from matengine.workflows.engine import execute_inline

from .helpers import read_table, run_inline

N = 40
MAPPING = {
    "id": "id",
    "pre": "pre_pt_position",
    "ctr": "ctr_pt_position",
    "post": "post_pt_position",
    "sizes": "size",
    "sv": ["pre_pt_supervoxel_id", "post_pt_supervoxel_id"],
}
ROOTS_TS = "2024-01-01T00:00:00+00:00"


def good_arrays(first_id: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(first_id)
    return {
        "id": np.arange(first_id, first_id + N, dtype=np.int64),
        "pre": rng.uniform(0, 1000, (N, 3)),
        "ctr": rng.uniform(0, 1000, (N, 3)),
        "post": rng.uniform(0, 1000, (N, 3)),
        "sizes": rng.uniform(10, 500, N),
        "sv": rng.integers(1, 2**40, (N, 2), dtype=np.uint64),
        "roots": rng.integers(1, 2**40, (N, 2), dtype=np.uint64),
    }


def write_folder(folder: Path, arrays: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if isinstance(arr, bytes):
            (folder / f"{name}.npy").write_bytes(arr)
        elif arr is not None:
            np.save(folder / f"{name}.npy", arr)
    return folder


def params(datastack: str, folder: Path, mapping: dict | None = None, **extra) -> dict:
    p = {
        "datastack": datastack,
        "table": "syn",
        "schema": "synapse",
        "source": f"file://{folder}",
        "column_mapping": mapping or dict(MAPPING),
        "roots_timestamp": None,
        "chunk_rows": 16,
    }
    p.update(extra)
    return p


# ------------------------------------------------------------------ the state that must not move


def snapshot(engine, datastack: str) -> dict[str, Any]:
    """Everything an upload to ``datastack`` could have written."""
    out: dict[str, Any] = {}
    try:
        tables = catalog.list_tables(engine, datastack)
    except NotFound:
        tables = []
    for t in tables:
        d = t.to_dict()
        d.pop("live_rows", None)
        rows = read_table(engine, t.names.live_q, t.schema_type, t.names.segmentation_q)
        with engine.connect() as conn:
            seq = conn.execute(
                text(f"SELECT last_value FROM {t.names.datastack}.{t.names.table}_id_seq")
            ).scalar()
            created = conn.execute(
                text(f"SELECT array_agg(created ORDER BY id) FROM {t.names.live_q}")
            ).scalar()
        out[t.table_name] = {
            "catalog": d,
            "seq": seq,
            "created": created,
            "rows": {k: v.tolist() for k, v in rows.items()},
        }
    with engine.connect() as conn:
        out["run_chunks"] = conn.execute(
            text(
                "SELECT count(*) FROM matengine.run_chunks c JOIN matengine.workflow_runs r "
                "ON r.id = c.run_id WHERE r.datastack = :d"
            ),
            {"d": datastack},
        ).scalar_one()
    return out


@dataclass
class Outcome:
    fast: str | None  # check_request's message (None: it let the request through)
    run: runs.Run
    chunk_markers: int
    steps: list = field(default_factory=list)


def attempt(engine, p: dict, fragment: str | tuple[str, ...], *, fast: bool) -> Outcome:
    """Try the upload both ways; assert the message and that nothing changed."""
    import matengine.workflows.registry  # noqa: F401

    fragments = (fragment,) if isinstance(fragment, str) else fragment
    before = snapshot(engine, p["datastack"])
    message = None
    if fast:
        with pytest.raises(MatengineError) as info:
            check_request(engine, p)
        message = str(info.value)
        assert all(f in message for f in fragments), message
        assert snapshot(engine, p["datastack"]) == before
    run_id = runs.create_run(engine, "bulk_upload", p, datastack=p["datastack"], table_name=p["table"])
    run = execute_inline(engine, run_id)
    assert run.state == "FAILED", run
    assert len(run.errors) == 1, run.errors
    assert all(f in run.errors[0]["message"] for f in fragments), run.errors
    with engine.connect() as conn:
        markers = conn.execute(
            text("SELECT count(*) FROM matengine.run_chunks WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
    assert markers == 0 and run.steps == [] and run.rows_done == 0
    assert snapshot(engine, p["datastack"]) == before
    return Outcome(message, run, markers, run.steps)


@pytest.fixture(scope="module")
def ds(engine, tmp_path_factory):
    """One datastack for the module, holding ``syn`` (synapse) and ``cells``
    (cell_type_local), ids 1..N. Every attempt must leave it as it was, so the tests can share
    it; an upload meant to create a table names one of its own (:func:`fresh`)."""
    name = f"bad_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source="precomputed://file:///nowhere/seg", voxel_resolution=(4, 4, 40)
    )
    root = tmp_path_factory.mktemp("bad_input")
    run_inline(
        engine,
        "bulk_upload",
        params(name, write_folder(root / "syn", good_arrays(1))),
        datastack=name,
        table="syn",
    )
    run_inline(
        engine,
        "bulk_upload",
        params(
            name,
            write_folder(root / "cells", cell_arrays(1)),
            CELL_MAPPING,
            schema="cell_type_local",
            table="cells",
        ),
        datastack=name,
        table="cells",
    )
    yield name
    catalog.drop_datastack(engine, name)


def fresh() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"


def _present(engine, datastack: str, table: str) -> bool:
    try:
        catalog.get_table(engine, datastack, table)
    except NotFound:
        return False
    return True


# ------------------------------------------------------------------ header checks (fast)


def _garbage() -> bytes:
    return b"this is not numpy \x00\x01\x02" * 8


def _truncated() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(N, dtype=np.float64))
    return buf.getvalue()[:-20]


def _fortran() -> np.ndarray:
    return np.asfortranarray(np.zeros((N, 3)) + 1.0)


HEADER_CASES = {
    # name: (changes to the files, changes to the mapping, expected fragment)
    "missing file": ({"sizes": None}, {}, "missing file sizes.npy in file://"),
    "garbage bytes": ({"sizes": _garbage()}, {}, "sizes.npy is not a readable .npy file"),
    "truncated file": (
        {"sizes": _truncated()},
        {},
        f"sizes.npy is shorter than its header says: shape ({N},) of float64 "
        f"needs {128 + 8 * N} bytes, the file has {128 + 8 * N - 20}",
    ),
    "float ids": (
        {"id": np.arange(1, N + 1, dtype=np.float64)},
        {},
        "id.npy has dtype float64, which cannot hold 'id' (bigint)",
    ),
    "string sizes": (
        {"sizes": np.array(["big"] * N)},
        {},
        "sizes.npy has dtype <U3, which cannot hold 'size' (double precision)",
    ),
    "bool positions": (
        {"pre": np.ones((N, 3), bool)},
        {},
        "pre.npy has dtype bool, which cannot hold 'pre_pt_position'",
    ),
    "object dtype": (
        {"sizes": np.array([1.0, "x"] * (N // 2), dtype=object)},
        {},
        "sizes.npy holds Python objects",
    ),
    "(N,2) positions": (
        {"pre": np.zeros((N, 2))},
        {},
        f"pre.npy has shape ({N}, 2); mapping it to ['pre_pt_position'] needs (N, 3)",
    ),
    "1-D file to 2 names": (
        {"sv": np.arange(1, N + 1, dtype=np.uint64)},
        {},
        f"sv.npy has shape ({N},); mapping it to "
        "['pre_pt_supervoxel_id', 'post_pt_supervoxel_id'] needs (N, 2)",
    ),
    "2-D file to one name": (
        {"sizes": np.ones((N, 2))},
        {},
        f"sizes.npy has shape ({N}, 2); mapping it to ['size'] needs (N,)",
    ),
    "fortran order": ({"pre": _fortran()}, {}, "pre.npy is stored in Fortran order"),
    "different lengths": (
        {"sizes": np.ones(N - 1)},
        {},
        ("files have different lengths (", f"id.npy: {N}", f"sizes.npy: {N - 1}"),
    ),
    "unknown column": (
        {},
        {"sizes": "sise"},
        "column_mapping maps 'sizes' to unknown column 'sise' of schema 'synapse'",
    ),
    "column mapped twice": ({}, {"ctr": "pre_pt_position"}, "column 'pre_pt_position' is mapped twice"),
    "required column missing": (
        {},
        {"ctr": None},
        "required column 'ctr_pt_position' of schema 'synapse' is not in column_mapping",
    ),
    "position in a list": (
        {},
        {"ctr": ["ctr_pt_position"]},
        "ctr.npy: a position cannot be part of a list mapping",
    ),
    "roots without roots_timestamp": (
        {},
        {"roots": ["pre_pt_root_id", "post_pt_root_id"]},
        "root ids are mapped: say when they were valid (roots_timestamp)",
    ),
}


def _case_params(
    datastack: str, tmp_path: Path, files: dict, mapping_change: dict, first_id: int, table: str = "syn"
) -> dict:
    arrays = {**good_arrays(first_id), **files}
    folder = write_folder(tmp_path / f"bad_{uuid.uuid4().hex[:6]}", arrays)
    mapping = dict(MAPPING)
    for k, v in mapping_change.items():
        if v is None:
            mapping.pop(k)
        else:
            mapping[k] = v
    return params(datastack, folder, mapping, table=table)


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header_checks_refuse_a_new_table(engine, ds, tmp_path, case):
    files, change, fragment = HEADER_CASES[case]
    table = fresh()
    attempt(engine, _case_params(ds, tmp_path, files, change, 1, table), fragment, fast=True)
    assert not _present(engine, ds, table)


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header_checks_leave_an_existing_table_alone(engine, ds, tmp_path, case):
    files, change, fragment = HEADER_CASES[case]
    attempt(engine, _case_params(ds, tmp_path, files, change, N + 1), fragment, fast=True)


# ------------------------------------------------------------------ data checks (in plan)


def _with(name: str, row: int, value, first_id: int = 1):
    arr = good_arrays(first_id)[name].copy()
    arr[row] = value
    return arr


def _data_cases(first_id: int) -> dict:
    nan_pre = _with("pre", 9, [1.0, np.nan, 3.0], first_id)
    inf_post = _with("post", 33, [1.0, 2.0, np.inf], first_id)
    ninf_ctr = _with("ctr", 0, [-np.inf, 2.0, 3.0], first_id)
    dup = _with("id", 7, first_id + 2, first_id)
    big_sv = _with("sv", 21, [5, 2**63], first_id)
    return {
        "supervoxel id beyond int64": (
            {"sv": big_sv},
            "sv.npy row 21: post_pt_supervoxel_id 9223372036854775808 is larger than a 64-bit signed "
            "integer can hold (9223372036854775807)",
        ),
        "duplicate id": ({"id": dup}, f"id.npy row 7: duplicate id {first_id + 2}"),
        "negative id": ({"id": _with("id", 5, -4, first_id)}, "id.npy row 5: id -4 is not positive"),
        "zero id": ({"id": _with("id", 0, 0, first_id)}, "id.npy row 0: id 0 is not positive"),
        "id beyond int64": (
            {"id": np.arange(N, dtype=np.uint64) + np.uint64(2**63 - 19)},
            "id.npy row 19: id 9223372036854775808 is larger than the largest id (9223372036854775807)",
        ),
        "NaN coordinate": ({"pre": nan_pre}, "pre.npy row 9: coordinate is NaN or infinite"),
        "inf coordinate": ({"post": inf_post}, "post.npy row 33: coordinate is NaN or infinite"),
        "-inf coordinate": ({"ctr": ninf_ctr}, "ctr.npy row 0: coordinate is NaN or infinite"),
    }


DATA_CASES = list(_data_cases(1))


@pytest.mark.parametrize("case", DATA_CASES)
def test_data_checks_fail_the_run_before_a_new_table_exists(engine, ds, tmp_path, case):
    files, fragment = _data_cases(1)[case]
    table = fresh()
    attempt(engine, _case_params(ds, tmp_path, files, {}, 1, table), fragment, fast=False)
    assert not _present(engine, ds, table)


@pytest.mark.parametrize("case", DATA_CASES)
def test_data_checks_leave_an_existing_table_alone(engine, ds, tmp_path, case):
    files, fragment = _data_cases(N + 1)[case]
    attempt(engine, _case_params(ds, tmp_path, files, {}, N + 1), fragment, fast=False)


def test_ids_already_in_the_table(engine, ds, tmp_path):
    ids = np.arange(1000, 1000 + N, dtype=np.int64)
    ids[12] = 17  # the table has ids 1..N
    p = _case_params(ds, tmp_path, {"id": ids}, {}, N + 1)
    out = attempt(engine, p, "id.npy row 12: id 17 already exists in table 'syn'", fast=False)
    assert "row 12, field 'id'" in out.run.errors[0]["message"]


def test_ids_already_in_the_table_beyond_the_first_scan_block(engine, ds, tmp_path):
    """The overlap is searched block by block: one far from the start is still named."""
    n = 250_000
    folder = write_folder(
        tmp_path / "big",
        {
            "id": np.arange(10_000, 10_000 + n, dtype=np.int64),
            "pre": np.ones((n, 3)),
            "ctr": np.ones((n, 3)),
            "post": np.ones((n, 3)),
        },
    )
    ids = np.load(folder / "id.npy")
    ids[234_567] = 3
    np.save(folder / "id.npy", ids)
    mapping = {"id": "id", "pre": "pre_pt_position", "ctr": "ctr_pt_position", "post": "post_pt_position"}
    attempt(
        engine,
        params(ds, folder, mapping, chunk_rows=100_000),
        "id.npy row 234567: id 3 already exists in table 'syn'",
        fast=False,
    )


# ------------------------------------------------------------------ text PostgreSQL cannot hold

CELL_MAPPING = {"id": "id", "pt": "pt_position", "cell_type": "cell_type", "system": "classification_system"}


def cell_arrays(first_id: int = 1, **changes) -> dict[str, Any]:
    arrays = {
        "id": np.arange(first_id, first_id + N, dtype=np.int64),
        "pt": np.ones((N, 3)) * np.arange(N)[:, None],
        "cell_type": np.array(["basket", "pyramidal"] * (N // 2)),
        "system": np.array(["morphological"] * N),
    }
    for name, (row, value) in changes.items():
        arr = arrays[name]
        if isinstance(value, bytes):
            arr = arr.astype("S")
        arr[row] = value
        arrays[name] = arr
    return arrays


TEXT_CASES = {
    "NUL in text": (
        {"cell_type": (30, "ba\x00sket")},
        "cell_type.npy row 30: text for 'cell_type' contains a NUL character",
    ),
    "NUL in bytes": (
        {"cell_type": (3, b"\x00x")},
        "cell_type.npy row 3: text for 'cell_type' contains a NUL character",
    ),
    "bytes not UTF-8": (
        {"cell_type": (17, b"\xffbad")},
        "cell_type.npy row 17: text for 'cell_type' is not valid UTF-8",
    ),
    "lone surrogate": (
        {"system": (21, "morpho\ud800")},
        "system.npy row 21: text for 'classification_system' is not valid UTF-8",
    ),
}


@pytest.mark.parametrize("append", [False, True], ids=["new table", "existing table"])
@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_text_checks_fail_the_run_before_anything_is_written(engine, ds, tmp_path, case, append):
    changes, fragment = TEXT_CASES[case]
    table = "cells" if append else fresh()
    folder = write_folder(tmp_path / "bad", cell_arrays(N + 1, **changes))
    attempt(
        engine, params(ds, folder, CELL_MAPPING, schema="cell_type_local", table=table), fragment, fast=False
    )
    assert _present(engine, ds, table) == append


# ------------------------------------------------------------------ near misses that must load


def test_unusual_but_valid_files_load_exactly(engine, ds, tmp_path):
    """Checks refuse only what is wrong: big-endian, narrow and unsigned types, (N, 1) columns,
    integer positions and bytes strings all load as their values."""
    arrays = {
        "id": np.arange(7, 7 + N, dtype=">u4"),
        "pt": (np.arange(N * 3).reshape(N, 3) * 2).astype(np.int16),
        "cell_type": np.array([b"basket", b"chandelier"] * (N // 2)),
        "system": np.array(["morpholog\u00efcal"] * N)[:, None],
        # narrow unsigned ids above the signed range of their width
        "sv": np.arange(N, dtype=np.uint32) + np.uint32(3_000_000_000),
        "root": np.arange(N, dtype=">u2") + np.uint16(40_000),
    }
    folder = write_folder(tmp_path / "odd", arrays)
    mapping = {**CELL_MAPPING, "sv": "pt_supervoxel_id", "root": "pt_root_id"}
    table = fresh()
    run_inline(
        engine,
        "bulk_upload",
        params(ds, folder, mapping, schema="cell_type_local", table=table, roots_timestamp=ROOTS_TS),
        datastack=ds,
        table=table,
    )
    t = catalog.get_table(engine, ds, table)
    got = read_table(engine, t.names.live_q, "cell_type_local", t.names.segmentation_q)
    assert got["id"].tolist() == list(range(7, 7 + N))
    assert got["pt_position"].tolist() == arrays["pt"].astype(float).tolist()
    assert got["cell_type"].tolist() == ["basket", "chandelier"] * (N // 2)
    assert got["classification_system"].tolist() == ["morpholog\u00efcal"] * N
    assert got["pt_supervoxel_id"].tolist() == arrays["sv"].tolist()
    assert got["pt_root_id"].tolist() == arrays["root"].tolist()


# ------------------------------------------------------------------ request checks


def test_unknown_datastack(engine, tmp_path):
    name = f"nope_{uuid.uuid4().hex[:6]}"
    folder = write_folder(tmp_path / "f", good_arrays())
    attempt(engine, params(name, folder), f"unknown datastack {name!r}", fast=True)


def test_unknown_schema(engine, ds, tmp_path):
    folder = write_folder(tmp_path / "f", good_arrays())
    table = fresh()
    attempt(engine, params(ds, folder, schema="synapes", table=table), "unknown schema 'synapes'", fast=True)
    assert not _present(engine, ds, table)


def test_schema_mismatch_with_the_existing_table(engine, ds, tmp_path):
    folder = write_folder(
        tmp_path / "cells",
        {
            "id": np.arange(100, 100 + N, dtype=np.int64),
            "pt": np.ones((N, 3)),
            "cell_type": np.array(["basket"] * N),
        },
    )
    p = params(
        ds, folder, {"id": "id", "pt": "pt_position", "cell_type": "cell_type"}, schema="cell_type_local"
    )
    attempt(engine, p, "table 'syn' has schema 'synapse', not 'cell_type_local'", fast=True)


def test_roots_valid_at_another_time_than_the_tables(engine, ds, tmp_path):
    folder = write_folder(tmp_path / "first", good_arrays(1))
    mapping = {**MAPPING, "roots": ["pre_pt_root_id", "post_pt_root_id"]}
    table = fresh()
    run_inline(
        engine,
        "bulk_upload",
        params(ds, folder, mapping, roots_timestamp=ROOTS_TS, table=table),
        datastack=ds,
        table=table,
    )
    folder2 = write_folder(tmp_path / "second", good_arrays(N + 1))
    p = params(ds, folder2, mapping, roots_timestamp="2024-02-01T00:00:00+00:00", table=table)
    attempt(engine, p, f"table {table!r} holds roots valid at 2024-01-01T00:00:00+00:00", fast=True)


@pytest.mark.parametrize("key", ["roots_timestamp", "created"])
def test_unparsable_times(engine, ds, tmp_path, key):
    folder = write_folder(tmp_path / "f", good_arrays())
    mapping = {**MAPPING, "roots": ["pre_pt_root_id", "post_pt_root_id"]}
    table = fresh()
    p = params(ds, folder, mapping, roots_timestamp=ROOTS_TS, table=table)
    p[key] = "last tuesday"
    attempt(engine, p, f"{key} 'last tuesday' is not a time", fast=True)
    assert not _present(engine, ds, table)


BAD_PARAMS = {
    "hostile table name": (
        {"table": 'syn"; DROP TABLE matengine.workflow_runs; --'},
        "invalid table name 'syn\"; DROP TABLE",
    ),
    "negative chunk_rows": ({"chunk_rows": -5}, "chunk_rows must be a positive integer, not -5"),
    "text chunk_rows": ({"chunk_rows": "many"}, "chunk_rows must be a positive integer, not 'many'"),
    "unsupported protocol": (
        {"source": "ftp://host/folder"},
        "source 'ftp://host/folder': unsupported protocol 'ftp'",
    ),
    "no bucket": ({"source": "gs://"}, "source 'gs://' names no bucket or folder"),
    "folder that does not exist": (
        {"source": "file://{tmp}/no/such/folder"},
        "missing file id.npy in file://{tmp}/no/such/folder",
    ),
    "folder outside the source roots": (
        {"source": "file:///no/such/folder"},
        "source 'file:///no/such/folder' is outside the configured source roots (MATENGINE_SOURCE_ROOTS)",
    ),
    "dot-dot out of a root": (
        {"source": "file://{tmp}/../../etc"},
        "has a '.' or '..' segment",
    ),
    "loopback URL": (
        {"source": "http://127.0.0.1:9/folder"},
        "is outside the configured source roots",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_bad_parameters(engine, ds, tmp_path, case):
    change, fragment = BAD_PARAMS[case]
    folder = write_folder(tmp_path / "f", good_arrays())
    change = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in change.items()}
    fragment = fragment.replace("{tmp}", str(tmp_path))
    p = {**params(ds, folder, table=fresh()), **change}
    attempt(engine, p, fragment, fast=True)
    assert not _present(engine, ds, p["table"])


def test_empty_mapping(engine, ds, tmp_path):
    folder = write_folder(tmp_path / "f", good_arrays())
    attempt(
        engine,
        params(ds, folder, {}, column_mapping={}),
        "column_mapping must be a non-empty object",
        fast=True,
    )


# ------------------------------------------------------------------ through the CLI


def test_cli_refuses_before_recording_a_run(engine, ds, tmp_path):
    from matengine.cli import app

    folder = write_folder(tmp_path / "f", {**good_arrays(), "sizes": None})
    table = fresh()
    before = snapshot(engine, ds)
    count = text("SELECT count(*) FROM matengine.workflow_runs WHERE datastack = :d")
    with engine.connect() as conn:
        n_runs = conn.execute(count, {"d": ds}).scalar_one()
    result = CliRunner().invoke(
        app,
        [
            "upload",
            ds,
            table,
            "--schema",
            "synapse",
            "--source",
            f"file://{folder}",
            "--column-mapping",
            json.dumps(MAPPING),
            "--json",
        ],
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidInput)
    assert "missing file sizes.npy" in str(result.exception)
    with engine.connect() as conn:
        assert conn.execute(count, {"d": ds}).scalar_one() == n_runs
    assert snapshot(engine, ds) == before
    assert not _present(engine, ds, table)
