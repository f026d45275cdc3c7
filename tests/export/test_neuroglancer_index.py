"""The Neuroglancer annotations' indexes against the oracle: a multi-level spatial index (each
annotation in exactly one cell of one level, a cell holding exactly that level's annotations
whose position lies in it), relationship files, and byte-for-byte agreement with the
``neuroglancer`` package's own writer where both apply (a one-cell index)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from neuroglancer import CoordinateSpace
from neuroglancer.viewer_state import AnnotationPropertySpec
from neuroglancer.write_annotations import AnnotationWriter

from matengine.export.neuroglancer import write_table_annotations
from matengine.export.source import chunk_batches, layout_of, version_relation
from matengine.query import meta
from matengine.schemas import get_schema


def _decode(info: dict, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(records, ids) of a multiple-annotation file, with the package's record layout."""
    space = CoordinateSpace(json=info["dimensions"])
    props = [AnnotationPropertySpec(json_data=p) for p in info["properties"]]
    dtype = np.dtype(AnnotationWriter(space, info["annotation_type"], properties=props).get_dtype())
    count = int(np.frombuffer(blob[:8], "<u8")[0])
    records = np.frombuffer(blob, dtype, count, offset=8)
    ids = np.frombuffer(blob, "<u8", count, offset=8 + count * dtype.itemsize).astype(np.int64)
    assert len(blob) == 8 + count * (dtype.itemsize + 8)
    return records, ids


@pytest.fixture(scope="module")
def indexed(engine, versioned, tmp_path_factory):
    ds, when = versioned
    folder = tmp_path_factory.mktemp("ng") / "synapses"
    write_table_annotations(engine, ds, 1, "synapses", folder, limit=100)
    return folder, json.loads((folder / "info").read_text()), when


def _cells(folder: Path, level: dict) -> dict[tuple[int, ...], bytes]:
    return {
        tuple(int(c) for c in p.name.split("_")): p.read_bytes()
        for p in sorted((folder / level["key"]).iterdir())
    }


def test_info_lists_a_multi_level_spatial_index(indexed):
    _, info, _ = indexed
    levels = info["spatial"]
    assert len(levels) >= 3
    assert levels[0]["grid_shape"] == [1, 1, 1]
    extent = np.array(info["upper_bound"]) - np.array(info["lower_bound"])
    for prev, level in zip(levels, levels[1:], strict=False):
        assert np.allclose(np.array(level["grid_shape"]) * np.array(level["chunk_size"]), extent)
        for a, b in zip(prev["chunk_size"], level["chunk_size"], strict=True):
            assert b in (a, a / 2)  # equal, or half: each cell's children nest in it
    assert np.prod(levels[-1]["grid_shape"]) > 1


def test_every_annotation_is_in_exactly_one_cell_of_one_level(indexed, oracle):
    folder, info, when = indexed
    seen: list[int] = []
    for level in info["spatial"]:
        for blob in _cells(folder, level).values():
            records, ids = _decode(info, blob)
            assert len(ids) <= level["limit"]
            seen += ids.tolist()
    want = oracle.table_at("synapses", when)["id"].astype(np.int64).tolist()
    assert sorted(seen) == sorted(want) and len(seen) == len(set(seen))
    coarse = sum(len(_decode(info, b)[1]) for b in _cells(folder, info["spatial"][0]).values())
    assert 0 < coarse <= 2 * 100  # level 0: a sample of about `limit` (random), not all 3000


def test_a_cell_holds_exactly_the_level_annotations_whose_position_lies_in_it(indexed, oracle):
    folder, info, when = indexed
    syn = oracle.table_at("synapses", when)
    row = {int(i): k for k, i in enumerate(syn["id"].tolist())}
    lower = np.array(info["lower_bound"])
    for level in info["spatial"]:
        cells = {c: _decode(info, b) for c, b in _cells(folder, level).items()}
        in_level = np.array([i for _, ids in cells.values() for i in ids.tolist()], np.int64)
        at = np.array([row[int(i)] for i in in_level], np.int64)
        pre = syn["pre_pt_position"][at].astype(np.float64)
        grid = np.array(level["grid_shape"])
        where = np.minimum(np.floor((pre - lower) / np.array(level["chunk_size"])).astype(int), grid - 1)
        for cell, (records, ids) in cells.items():
            expected = in_level[(where == np.array(cell)).all(axis=1)]
            assert sorted(ids.tolist()) == sorted(expected.tolist())
            k = np.array([row[int(i)] for i in ids], np.int64)
            geometry = np.concatenate([syn["pre_pt_position"][k], syn["post_pt_position"][k]], axis=1)
            assert np.array_equal(records["geometry"], geometry.astype(np.float32))


def test_relationship_files_list_each_root_s_annotations(indexed, oracle):
    folder, info, when = indexed
    syn = oracle.table_at("synapses", when)
    for rel, column in (("rel_pre_pt_root_id", "pre_pt_root_id"), ("rel_post_pt_root_id", "post_pt_root_id")):
        roots = syn[column].astype(np.int64)
        files = {int(p.name): p.read_bytes() for p in (folder / rel).iterdir()}
        assert sorted(files) == sorted(set(roots[roots != 0].tolist()))
        for root, blob in files.items():
            assert sorted(_decode(info, blob)[1].tolist()) == sorted(syn["id"][roots == root].tolist())


def test_one_cell_index_matches_the_package_writer_byte_for_byte(engine, versioned, tmp_path):
    """With a limit above the table's rows there is one level of one cell: what the package's
    own writer writes for the same rows (fed in id order), but for the cell's order and the
    info's spatial entry."""
    ds, _ = versioned
    ours = tmp_path / "ours"
    rows = write_table_annotations(engine, ds, 1, "synapses", ours, limit=10**9)
    info = json.loads((ours / "info").read_text())
    assert [lv["grid_shape"] for lv in info["spatial"]] == [[1, 1, 1]]
    vt = meta.version_table(engine, ds, 1, "synapses")
    layout = layout_of(get_schema(vt.schema_type))
    space = CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(vt.voxel_resolution))
    props = [AnnotationPropertySpec(json_data=p) for p in info["properties"]]
    writer = AnnotationWriter(space, "line", ["pre_pt_root_id", "post_pt_root_id"], props)
    with engine.connect() as conn:
        lo, hi = -(2**63), 2**63 - 1
        batches = list(chunk_batches(conn, version_relation(ds, 1, "synapses"), layout, lo, hi))
    data = {
        n: np.concatenate([b.column(n).to_numpy(zero_copy_only=False) for b in batches])
        for n in layout.schema.names
    }
    order = np.argsort(data["id"])
    for i in order.tolist():
        a = [data[f"pre_pt_position_{x}"][i] for x in "xyz"]
        b = [data[f"post_pt_position_{x}"][i] for x in "xyz"]
        related = {r: [int(data[r][i])] if data[r][i] else [] for r in ("pre_pt_root_id", "post_pt_root_id")}
        writer.add_line(a, b, id=int(data["id"][i]), size=float(data["size"][i]), **related)
    theirs = tmp_path / "theirs"
    writer.write(theirs)
    assert rows == len(order)
    for sub in ("by_id", "rel_pre_pt_root_id", "rel_post_pt_root_id"):
        mine = {p.name: p.read_bytes() for p in (ours / sub).iterdir()}
        assert mine == {p.name: p.read_bytes() for p in (theirs / sub).iterdir()}, sub
    theirs_info = json.loads((theirs / "info").read_text())
    for key in ("@type", "dimensions", "annotation_type", "properties", "relationships", "by_id"):
        assert info[key] == theirs_info[key], key
    mine_cell = _decode(info, (ours / "spatial0" / "0_0_0").read_bytes())
    their_cell = _decode(info, (theirs / "spatial0" / "0_0_0").read_bytes())

    def by_id(cell: tuple[np.ndarray, np.ndarray]) -> dict[int, bytes]:
        return {int(i): r.tobytes() for r, i in zip(cell[0], cell[1], strict=True)}

    assert by_id(mine_cell) == by_id(their_cell)
