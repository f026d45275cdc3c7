"""Edits appended to a ``local://`` graph: exact time rule at the edit, fresh ids, refusals
that change nothing, concurrent writers from several processes, readers that reopen."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import numpy as np
import pytest

from matengine.query import graphs
from matengine.segmentation.local_edits import EditRefused, Merge, Split, apply_edit
from matengine.segmentation.local_format import file_stamp
from matengine.segmentation.local_graph import LocalGraph
from matengine.segmentation.timecodes import from_us
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle

ONE_US = timedelta(microseconds=1)


@pytest.fixture
def dataset(tmp_path):
    return generate_dataset(tmp_path / "ds", supervoxels=120, edits=12, synapses=50, cells=5, seed=3)


def _graph_dir(info):
    return info.directory / "synth_pcg"


def _two_roots(graph: LocalGraph, at, skip=()):
    svs = graph.supervoxel_ids
    roots = graph.get_roots(svs, at)
    order = [i for i in range(len(svs)) if int(roots[i]) not in skip]
    a = order[0]
    b = next(i for i in order if roots[i] != roots[a])
    return int(svs[a]), int(svs[b]), int(roots[a]), int(roots[b])


def test_merge_is_seen_at_its_timestamp_not_1us_before(dataset):
    d = _graph_dir(dataset)
    before = LocalGraph(d)
    latest = before.files.edits.timestamp_us[-1]
    sa, sb, ra, rb = _two_roots(before, before.files.created + timedelta(days=60))
    result = apply_edit(d, Merge(sa, sb), user_id=7)
    after = LocalGraph(d)
    t = result.timestamp
    assert result.kind == "merge" and result.old_root_ids == (ra, rb)
    (new,) = result.new_root_ids
    assert new not in set(before.index.root_ids.tolist())
    assert result.operation_id == int(before.files.edits.operation_id.max()) + 1
    assert int(after.files.edits.timestamp_us[-1]) > int(latest)
    assert after.get_roots(np.array([sa, sb], np.uint64), t).tolist() == [new, new]
    assert after.get_roots(np.array([sa, sb], np.uint64), t - ONE_US).tolist() == [ra, rb]
    old, born = after.get_delta_roots(t - ONE_US, t)
    assert old.tolist() == sorted([ra, rb]) and born.tolist() == [new]
    assert int(after.files.edits.user_id[-1]) == 7
    # the independent oracle, reading the files, agrees on every supervoxel
    oracle = Oracle(dataset.directory)
    for when in (t - ONE_US, t):
        np.testing.assert_array_equal(
            after.get_roots(oracle.svids, when), oracle.roots_at(oracle.svids, when)
        )


def test_split_moves_exactly_the_sources(dataset):
    d = _graph_dir(dataset)
    g = LocalGraph(d)
    now = g.files.created + timedelta(days=60)
    roots = g.get_roots(g.supervoxel_ids, now)
    values, counts = np.unique(roots, return_counts=True)
    root = int(values[np.argmax(counts)])
    members = g.supervoxel_ids[roots == root]
    sources, sinks = members[:2], members[-1:]
    result = apply_edit(d, Split(tuple(map(int, sources)), tuple(map(int, sinks)), root_id=root))
    moved_root, rest_root = result.new_root_ids
    after = LocalGraph(d)
    got = after.get_roots(members, result.timestamp)
    assert set(got[:2].tolist()) == {moved_root} and set(got[2:].tolist()) == {rest_root}
    assert after.get_roots(members, result.timestamp - ONE_US).tolist() == [root] * len(members)
    oracle = Oracle(dataset.directory)
    np.testing.assert_array_equal(got, oracle.roots_at(members, result.timestamp))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda g, sa, sb, ra: Merge(sa, sa), "already belong to the same root"),
        (lambda g, sa, sb, ra: Merge(sa, 12345), "not in this graph"),
        (lambda g, sa, sb, ra: Split((sa,), (sa,)), "both a source and a sink"),
        (lambda g, sa, sb, ra: Split((sa,), (sb,)), "must belong to one root"),
        (lambda g, sa, sb, ra: Split((sa,), (), root_id=ra), "at least one source and one sink"),
        (lambda g, sa, sb, ra: Split((sa, sa), (sb,)), "listed twice"),
    ],
)
def test_refused_edits_change_nothing(dataset, make, message):
    d = _graph_dir(dataset)
    g = LocalGraph(d)
    sa, sb, ra, _ = _two_roots(g, g.files.created + timedelta(days=60))
    stamp = file_stamp(d)
    with pytest.raises(EditRefused, match=message):
        apply_edit(d, make(g, sa, sb, ra))
    assert file_stamp(d) == stamp


def test_split_with_a_stale_root_id_is_refused(dataset):
    d = _graph_dir(dataset)
    g = LocalGraph(d)
    sa, sb, ra, rb = _two_roots(g, g.files.created + timedelta(days=60))
    apply_edit(d, Merge(sa, sb))
    stamp = file_stamp(d)
    with pytest.raises(EditRefused, match="do not belong to the given root"):
        apply_edit(d, Split((sa,), (sb,), root_id=ra))
    assert file_stamp(d) == stamp


def _merge_in_process(args):
    directory, sa, sb = args
    return apply_edit(directory, Merge(sa, sb))


def test_concurrent_edits_from_two_processes_all_land(dataset):
    d = _graph_dir(dataset)
    g = LocalGraph(d)
    at = g.files.created + timedelta(days=60)
    roots = g.get_roots(g.supervoxel_ids, at)
    firsts = {}
    for sv, r in zip(g.supervoxel_ids.tolist(), roots.tolist(), strict=True):
        firsts.setdefault(r, sv)
    reps = list(firsts.values())[:8]  # 8 distinct roots -> 4 independent merges
    jobs = [(str(d), reps[2 * k], reps[2 * k + 1]) for k in range(4)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_merge_in_process, jobs)
    after = LocalGraph(d)
    new = [r.new_root_ids[0] for r in results]
    assert len(set(new)) == 4 and len({r.operation_id for r in results}) == 4
    assert len(after.files.edits) == len(g.files.edits) + 4
    for (_, sa, sb), r in zip(jobs, results, strict=True):
        assert after.get_roots(np.array([sa, sb], np.uint64), r.timestamp).tolist() == [r.new_root_ids[0]] * 2
    assert np.all(np.diff(after.files.edits.timestamp_us) > 0)


def test_cached_readers_reopen_after_an_edit(dataset):
    from matengine.workflows.segmentation_cache import cached_segmentation

    url = dataset.graph_url
    graphs.clear()
    first = graphs.root_graph(url)
    assert graphs.root_graph(url) is first
    seg_before = cached_segmentation(url)
    assert cached_segmentation(url) is seg_before
    g = LocalGraph(_graph_dir(dataset))
    sa, sb, _, _ = _two_roots(g, g.files.created + timedelta(days=60))
    result = apply_edit(_graph_dir(dataset), Merge(sa, sb))
    fresh = graphs.root_graph(url)
    assert fresh is not first
    assert fresh.get_roots(np.array([sa], np.uint64), result.timestamp).tolist() == [result.new_root_ids[0]]
    seg = cached_segmentation(url)
    assert seg is not seg_before
    assert seg.roots.get_roots(np.array([sb], np.uint64), result.timestamp).tolist() == [
        result.new_root_ids[0]
    ]


def test_cli_merge_split_and_log(dataset):
    import json

    from typer.testing import CliRunner

    from matengine.cli import app

    runner = CliRunner()
    url = dataset.graph_url
    g = LocalGraph(_graph_dir(dataset))
    sa, sb, ra, rb = _two_roots(g, g.files.created + timedelta(days=60))
    out = runner.invoke(app, ["graph", "merge", url, str(sa), str(sb), "--json"])
    assert out.exit_code == 0, out.output
    merged = json.loads(out.output)
    assert merged["kind"] == "merge" and merged["old_root_ids"] == [ra, rb]
    (new,) = merged["new_root_ids"]
    out = runner.invoke(
        app, ["graph", "split", url, "--source", str(sa), "--sink", str(sb), "--root", str(new)]
    )
    assert out.exit_code == 0, out.output
    assert f"split {merged['operation_id'] + 1}" in out.output
    after = LocalGraph(_graph_dir(dataset))
    oracle = Oracle(dataset.directory)
    when = from_us(int(after.files.edits.timestamp_us[-1]))
    np.testing.assert_array_equal(after.get_roots(oracle.svids, when), oracle.roots_at(oracle.svids, when))
    out = runner.invoke(app, ["graph", "log", url, "--last", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert [r["kind"] for r in json.loads(out.output)] == ["merge", "split"]
    moved_root = int(after.files.edits.new_root_a[-1])
    out = runner.invoke(app, ["graph", "log", url, "--root", str(moved_root), "--json"])
    ops = [r["operation_id"] for r in json.loads(out.output)]
    assert ops == sorted(oracle.past_operations(moved_root))
    assert ops[-2:] == [merged["operation_id"], merged["operation_id"] + 1]
    # a refused edit: a clean message, exit code 1, nothing written
    stamp = file_stamp(_graph_dir(dataset))
    out = runner.invoke(app, ["graph", "merge", url, str(sa), str(sa)])
    assert out.exit_code == 1 and "already belong to the same root" in str(out.exception or out.output)
    assert file_stamp(_graph_dir(dataset)) == stamp
