"""The generated files: layout, dtypes, column mapping, determinism, and consistency
with the independent oracle."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import typer
from cloudvolume import CloudVolume
from typer.testing import CliRunner

from matengine.cli.synth_cmd import synth
from matengine.synth import annotations
from matengine.synth.generate import generate_dataset

SYNAPSE_FILES = {
    "id",
    "presyn_coords",
    "center_coords",
    "postsyn_coords",
    "sizes",
    "sv_ids_ordered",
    "root_ids_ordered",
}


def test_synapse_table_follows_the_seed_layout(small_dataset):
    folder = small_dataset.tables["synapses"]
    mapping = json.loads((folder / "column_mapping.json").read_text())
    assert mapping == {
        "id": "id",
        "presyn_coords": "pre_pt_position",
        "center_coords": "ctr_pt_position",
        "postsyn_coords": "post_pt_position",
        "sizes": "size",
        "sv_ids_ordered": ["pre_pt_supervoxel_id", "post_pt_supervoxel_id"],
        "root_ids_ordered": ["pre_pt_root_id", "post_pt_root_id"],
    }
    assert {p.stem for p in folder.glob("*.npy")} == SYNAPSE_FILES
    n = 1500
    shapes = {f: np.load(folder / f"{f}.npy", mmap_mode="r") for f in SYNAPSE_FILES}
    assert shapes["id"].shape == (n,) and shapes["id"].dtype == np.int64
    assert len(np.unique(shapes["id"])) == n
    for f in ("presyn_coords", "center_coords", "postsyn_coords"):
        assert shapes[f].shape == (n, 3)
    assert shapes["sizes"].dtype == np.float64
    for f in ("sv_ids_ordered", "root_ids_ordered"):
        assert shapes[f].shape == (n, 2) and shapes[f].dtype == np.uint64


def test_cells_table(small_dataset):
    folder = small_dataset.tables["cells"]
    mapping = json.loads((folder / "column_mapping.json").read_text())
    assert set(mapping.values()) == {"id", "pt_position", "cell_type", "classification_system"}
    assert np.load(folder / "pt_position.npy").shape == (80, 3)
    assert np.load(folder / "cell_type.npy").dtype.kind == "U"  # no pickled objects


def test_dataset_json(small_dataset):
    meta = json.loads((small_dataset.directory / "dataset.json").read_text())
    assert meta["volume"]["resolution"] != meta["annotation_resolution"]
    assert meta["tables"]["synapses"]["bound_points"] == ["pre_pt", "post_pt"]
    assert meta["tables"]["cells"]["schema"] == "cell_type_local"
    assert datetime.fromisoformat(meta["time"]["initial"]) == small_dataset.initial_timestamp
    assert (small_dataset.directory / meta["graph"]["path"] / "graph.json").is_file()
    assert small_dataset.graph_url.startswith("local://")


def test_volume(small_dataset):
    cv = CloudVolume(small_dataset.volume_url, progress=False)
    assert cv.info["scales"][0]["encoding"] == "compressed_segmentation"
    assert list(cv.voxel_offset) == list(small_dataset.voxel_offset) != [0, 0, 0]
    assert list(cv.chunk_size) == [64, 64, 64]
    data = np.asarray(cv[:, :, :])
    ids = np.unique(data)
    assert ids[0] == 0 and len(ids) - 1 == small_dataset.supervoxels


def test_edit_log_timing(small_dataset):
    ts = small_dataset.edit_timestamps
    assert len(ts) == small_dataset.edits == 60
    assert all(a < b for a, b in zip(ts, ts[1:], strict=False))
    assert small_dataset.start < ts[0] and ts[-1] <= small_dataset.end
    with np.load(small_dataset.graph_url[len("local://") :] + "/edits.npz") as z:
        kinds = set(z["kind"].tolist())
    assert kinds == {0, 1}


def test_columns_agree_with_oracle(small_dataset, small_oracle):
    folder = small_dataset.tables["synapses"]
    sv = np.load(folder / "sv_ids_ordered.npy")
    for j, f in enumerate(("presyn_coords", "postsyn_coords")):
        np.testing.assert_array_equal(sv[:, j], small_oracle.supervoxels_at(np.load(folder / f"{f}.npy")))
    roots = np.load(folder / "root_ids_ordered.npy")
    np.testing.assert_array_equal(
        roots.ravel(), small_oracle.roots_at(sv.ravel(), small_dataset.initial_timestamp)
    )
    missing = sv[:, 0] == 0
    assert 0 < missing.sum() < len(sv) * 0.2  # some points outside / on label 0, not most


def test_same_seed_same_dataset(tmp_path):
    kw = dict(size=(70, 60, 20), supervoxels=40, edits=10, synapses=50, cells=5, seed=3)
    a = generate_dataset(tmp_path / "a", **kw)
    b = generate_dataset(tmp_path / "b", **kw)
    c = generate_dataset(tmp_path / "c", **{**kw, "seed": 4})
    for f in ("presyn_coords", "sv_ids_ordered", "root_ids_ordered"):
        x = np.load(a.tables["synapses"] / f"{f}.npy")
        assert np.array_equal(x, np.load(b.tables["synapses"] / f"{f}.npy"))
        assert not np.array_equal(x, np.load(c.tables["synapses"] / f"{f}.npy"))
    assert a.edit_timestamps == b.edit_timestamps


def test_chunked_column_writing(tmp_path, monkeypatch):
    # Rows are written CHUNK_ROWS at a time (memory-flat at 10M rows); small chunks here.
    monkeypatch.setattr(annotations, "CHUNK_ROWS", 333)
    from matengine.synth.oracle import Oracle

    info = generate_dataset(
        tmp_path / "d",
        size=(80, 64, 16),
        supervoxels=50,
        edits=5,
        synapses=1000,
        cells=3,
        seed=5,
        start=datetime(2023, 5, 1, tzinfo=UTC),
        span=timedelta(hours=1),
    )
    folder = info.tables["synapses"]
    assert np.load(folder / "id.npy").tolist() == list(range(1, 1001))
    sv = np.load(folder / "sv_ids_ordered.npy")
    np.testing.assert_array_equal(
        sv[:, 1], Oracle(info.directory).supervoxels_at(np.load(folder / "postsyn_coords.npy"))
    )


def test_cli(tmp_path):
    app = typer.Typer()
    app.command("synth")(synth)
    app.command("noop")(lambda: None)  # two commands: typer keeps the "synth" name
    runner = CliRunner()
    helped = runner.invoke(app, ["synth", "--help"])
    assert helped.exit_code == 0 and "--supervoxels" in helped.output
    out = runner.invoke(
        app,
        [
            "synth",
            str(tmp_path / "cli"),
            "--size",
            "70,60,20",
            "--supervoxels",
            "30",
            "--edits",
            "4",
            "--synapses",
            "20",
            "--seed",
            "2",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["supervoxels"] == 30 and data["edits"] == 4
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--size", "1,2"])
    assert bad.exit_code != 0 and "three positive integers" in bad.output
