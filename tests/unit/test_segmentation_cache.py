"""The one segmentation cache's staleness rule: a local:// source is reopened when any file of
its directory changes; remote sources are never stamped."""

from __future__ import annotations

import os

from matengine.segmentation.cache import stamp


def test_a_changed_or_added_file_changes_the_stamp(tmp_path):
    (tmp_path / "edits.npz").write_bytes(b"one")
    before = stamp(f"local://{tmp_path}")
    assert before == stamp(f"local://{tmp_path}")
    (tmp_path / "edits.npz").write_bytes(b"one more edit")
    grown = stamp(f"local://{tmp_path}")
    assert grown != before
    (tmp_path / "graph.json").write_text("{}")
    assert stamp(f"local://{tmp_path}") != grown


def test_a_rewrite_of_the_same_size_changes_the_stamp(tmp_path):
    f = tmp_path / "initial.npy"
    f.write_bytes(b"aaaa")
    before = stamp(f"local://{tmp_path}")
    f.write_bytes(b"bbbb")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert stamp(f"local://{tmp_path}") != before


def test_remote_and_missing_sources_have_no_stamp(tmp_path):
    assert stamp("graphene://https://pcg.example/segmentation/table/x") == ()
    assert stamp("precomputed://gs://bucket/seg") == ()
    assert stamp(f"local://{tmp_path / 'missing'}") == ()
