"""What a bulk upload will write, from ``column_mapping`` and ``.npy`` headers (local files),
and the checks that refuse bad files before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matengine.errors import InvalidInput
from matengine.schemas import get_schema
from matengine.workflows.npy_source import NpyFolder
from matengine.workflows.upload_layout import Target, resolve_targets, scan_files, text_values

SYN = get_schema("synapse")
MAPPING = {"id": "id", "pre": "pre_pt_position", "ctr": "ctr_pt_position", "post": "post_pt_position"}


def _folder(tmp_path: Path, **arrays: np.ndarray) -> NpyFolder:
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    return NpyFolder(tmp_path.as_uri())


def _synapses(tmp_path: Path, n: int = 4, **override: np.ndarray) -> NpyFolder:
    pts = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    arrays = {"id": np.arange(1, n + 1, dtype=np.int64), "pre": pts, "ctr": pts, "post": pts}
    arrays.update(override)
    return _folder(tmp_path, **arrays)


def test_targets_and_row_count(tmp_path):
    targets, rows = resolve_targets(SYN, MAPPING, _synapses(tmp_path))
    assert rows == 4
    assert targets == [
        Target("id", "id", None, "bigint", "live"),
        Target("pre_pt_position", "pre", None, "position", "live"),
        Target("ctr_pt_position", "ctr", None, "position", "live"),
        Target("post_pt_position", "post", None, "position", "live"),
    ]


def test_a_list_mapping_takes_columns_of_a_2d_file(tmp_path):
    folder = _synapses(tmp_path, roots=np.ones((4, 2), np.uint64))
    mapping = {**MAPPING, "roots": ["pre_pt_root_id", "post_pt_root_id"]}
    targets, _ = resolve_targets(SYN, mapping, folder)
    assert targets[-2:] == [
        Target("pre_pt_root_id", "roots", 0, "bigint", "segmentation"),
        Target("post_pt_root_id", "roots", 1, "bigint", "segmentation"),
    ]


def test_derived_spatial_point_takes_the_fields_names_or_ours(tmp_path):
    dsp = get_schema("derived_spatial_point")
    folder = _folder(
        tmp_path,
        id=np.arange(1, 3, dtype=np.int64),
        pos=np.zeros((2, 3)),
        chunk=np.array([4, 5], np.int64),
        lvl=np.array([1, 2], np.int64),
    )
    want = [
        Target("id", "id", None, "bigint", "live"),
        Target("pt_position", "pos", None, "position", "live"),
        Target("pt_dependent_chunk", "chunk", None, "bigint", "live"),
        Target("pt_level", "lvl", None, "bigint", "live"),
    ]
    theirs = {"id": "id", "pos": "position", "chunk": "dependent_chunk", "lvl": "level"}
    ours = {"id": "id", "pos": "pt_position", "chunk": "pt_dependent_chunk", "lvl": "pt_level"}
    assert resolve_targets(dsp, theirs, folder) == (want, 2)
    assert resolve_targets(dsp, ours, folder) == (want, 2)
    with pytest.raises(InvalidInput, match="required column 'pt_dependent_chunk'"):
        resolve_targets(dsp, {"id": "id", "pos": "position"}, folder)


@pytest.mark.parametrize(
    ("mapping", "override", "message"),
    [
        ({}, {}, "column_mapping must be a non-empty object"),
        ({**MAPPING, "id": "nope"}, {}, "field 'nope': column_mapping maps 'id' to unknown column 'nope'"),
        ({**MAPPING, "pre": ["pre_pt_position"]}, {}, "a position cannot be part of a list mapping"),
        (MAPPING, {"pre": np.zeros((4, 2))}, "pre.npy has shape (4, 2); mapping it to ['pre_pt_position']"),
        (MAPPING, {"id": np.zeros(4, np.float64)}, "id.npy has dtype float64, which cannot hold 'id'"),
        (MAPPING, {"id": np.arange(1, 4)}, "files have different lengths"),
        ({"id": "id", "pre": "pre_pt_position"}, {}, "required column 'ctr_pt_position'"),
        ({**MAPPING, "id2": "id"}, {"id2": np.arange(1, 5)}, "column 'id' is mapped twice"),
        (MAPPING, {"id": np.zeros(4, object)}, "id.npy holds Python objects"),
    ],
)
def test_bad_mappings_and_headers_are_refused(tmp_path, mapping, override, message):
    folder = _synapses(tmp_path, **override)
    with pytest.raises(InvalidInput) as err:
        resolve_targets(SYN, mapping, folder)
    assert message in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(InvalidInput, match="missing file id.npy"):
        resolve_targets(SYN, MAPPING, NpyFolder(tmp_path.as_uri()))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"id": np.array([1, 2, 0, 4])}, "id.npy row 2: id 0 is not positive"),
        ({"id": np.array([1, 2, 3, 2])}, "id.npy row 3: duplicate id 2"),
        ({"id": np.array([1, 2, 3, 2**63], np.uint64)}, "id.npy row 3: id 9223372036854775808 is larger"),
        ({"post": np.array([[0, 0, 0]] * 3 + [[0, np.nan, 0]])}, "post.npy row 3: coordinate is NaN"),
    ],
)
def test_the_scan_refuses_bad_rows_naming_file_and_row(tmp_path, override, message):
    folder = _synapses(tmp_path, **override)
    targets, rows = resolve_targets(SYN, MAPPING, folder)
    with pytest.raises(InvalidInput) as err:
        scan_files(folder, targets, rows)
    assert message in str(err.value)


def test_the_scan_returns_the_id_range(tmp_path):
    folder = _synapses(tmp_path, id=np.array([9, 3, 5, 4]))
    targets, rows = resolve_targets(SYN, MAPPING, folder)
    assert scan_files(folder, targets, rows) == {"min_id": 3, "max_id": 9}


def test_text_checks_refuse_nul_and_bad_utf8(tmp_path):
    schema = get_schema("cell_type_local")
    text_field = next(f.name for f in schema.fields if f.kind.name == "STRING")
    point = next(f.name for f in schema.fields if f.is_point)
    mapping = {"id": "id", "pt": f"{point}_position", "t": text_field}
    base = {"id": np.arange(1, 4), "pt": np.zeros((3, 3))}
    required = [f.name for f in schema.fields if f.required and not f.is_point and f.name != text_field]
    for r in required:
        mapping[r] = r
        base[r] = np.array(["x"] * 3)
    for values, message in [
        (np.array(["a", "b\x00c", "d"]), "t.npy row 1: text for"),
        (np.array([b"ok", b"\xff\xfe", b"x"]), "t.npy row 1: text for"),
    ]:
        folder = _folder(tmp_path, **base, t=values)
        targets, rows = resolve_targets(schema, mapping, folder)
        with pytest.raises(InvalidInput, match=message):
            scan_files(folder, targets, rows)
    assert text_values(np.array([b"caf\xc3\xa9"])).tolist() == ["café"]


def test_a_repeat_across_slices_is_found_at_its_second_row(tmp_path, monkeypatch):
    """Ids that are not ascending get the full check, whichever slice each copy is in: the
    smallest repeated id, named at its second occurrence."""
    monkeypatch.setattr("matengine.workflows.upload_layout.SCAN_ROWS", 3)
    folder = _synapses(tmp_path, n=8, id=np.array([10, 7, 12, 9, 30, 7, 12, 5]))
    targets, rows = resolve_targets(SYN, MAPPING, folder)
    with pytest.raises(InvalidInput, match=r"id\.npy row 5: duplicate id 7"):
        scan_files(folder, targets, rows)


def test_ascending_ids_across_slices_give_their_range(tmp_path, monkeypatch):
    monkeypatch.setattr("matengine.workflows.upload_layout.SCAN_ROWS", 3)
    folder = _synapses(tmp_path, n=7, id=np.array([3, 4, 9, 10, 11, 40, 41]))
    targets, rows = resolve_targets(SYN, MAPPING, folder)
    assert scan_files(folder, targets, rows) == {"min_id": 3, "max_id": 41}


def test_a_repeat_at_a_slice_boundary_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr("matengine.workflows.upload_layout.SCAN_ROWS", 3)
    folder = _synapses(tmp_path, n=6, id=np.array([1, 2, 3, 3, 4, 5]))
    targets, rows = resolve_targets(SYN, MAPPING, folder)
    with pytest.raises(InvalidInput, match=r"id\.npy row 3: duplicate id 3"):
        scan_files(folder, targets, rows)
