"""The oracle: the docs/design.md §3 time rule on rows, replayed roots, and its independence."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import numpy as np

import matengine.synth.oracle as oracle_module

US = timedelta(microseconds=1)


def test_oracle_imports_no_engine_code():
    tree = ast.parse(Path(oracle_module.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m and m.startswith("matengine")]


def test_table_at_rows_and_roots(small_dataset, small_oracle):
    t = small_dataset.end
    tab = small_oracle.table_at("synapses", t)
    assert len(tab["id"]) == 1500 and np.all(np.diff(tab["id"]) > 0)
    np.testing.assert_array_equal(
        tab["pre_pt_root_id"], small_oracle.roots_at(tab["pre_pt_supervoxel_id"], t)
    )
    zero = tab["pre_pt_supervoxel_id"] == 0
    assert np.all(tab["pre_pt_root_id"][zero] == 0)
    initial = small_oracle.table_at("synapses", small_dataset.initial_timestamp)
    changed = initial["pre_pt_root_id"] != tab["pre_pt_root_id"]
    assert changed.any() and not changed.all()  # edits moved some rows to new roots
    assert "ctr_pt_root_id" not in tab  # ctr_pt is not bound to the segmentation
    before = small_oracle.table_at("synapses", small_dataset.initial_timestamp - US)
    assert len(before["id"]) == 0


def test_table_at_extra_and_deleted_rows(small_dataset, small_oracle):
    t1 = small_dataset.edit_timestamps[20]
    pos = np.array([300, 400, 30])
    extra = [
        {
            "id": 10_001,
            "created": t1,
            "pt_position": pos,
            "cell_type": "basket",
            "classification_system": "morphological",
        },
        {
            "id": 10_002,
            "created": t1 - US,
            "deleted": t1,
            "pt_position": pos,
            "cell_type": "basket",
            "classification_system": "morphological",
        },
    ]
    deleted = {1: t1, 2: t1 + US}
    at = small_oracle.table_at("cells", t1, extra_rows=extra, deleted=deleted)
    ids = set(at["id"].tolist())
    # created <= T and (deleted is None or deleted > T)
    assert 10_001 in ids and 10_002 not in ids and 1 not in ids and 2 in ids
    before = small_oracle.table_at("cells", t1 - US, extra_rows=extra, deleted=deleted)
    assert {10_002, 1, 2} <= set(before["id"].tolist()) and 10_001 not in before["id"]
    row = int(np.flatnonzero(at["id"] == 10_001)[0])
    sv = small_oracle.supervoxels_at(pos[None])[0]
    assert at["pt_supervoxel_id"][row] == sv
    assert at["pt_root_id"][row] == small_oracle.roots_at([sv], t1)[0]


def test_replay_edges(small_dataset, small_oracle):
    """An edit at t changes the roots at T == t, not at t - 1 µs."""
    e = small_oracle.edits
    for i in (0, 17, len(e["timestamp_us"]) - 1):
        t = small_dataset.edit_timestamps[i]
        before, after = small_oracle.valid_roots_at(t - US), small_oracle.valid_roots_at(t)
        new = {int(e["new_root_a"][i])} | ({int(e["new_root_b"][i])} if e["kind"][i] else set())
        assert new <= set(after.tolist()) and not new & set(before.tolist())
