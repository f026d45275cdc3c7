"""The version store (docs/versions.md): many versions over an edit history, each equal to the
oracle at its T, built from what changed; removals free only what no retained version holds;
a dead build changes no published version."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import text

from matengine import annotations as ann
from matengine import catalog
from matengine import version_store as store
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle
from matengine.timeutil import utcnow
from matengine.versions import Removal, list_versions, remove_version
from matengine.workflows.submit import sync_parameters

from .helpers import assert_same_rows, load_dataset, make_datastack, read_version, run_inline

POINTS = ("pre_pt_position", "ctr_pt_position", "post_pt_position")


class History:
    """Annotation writes to ``synapses`` (inserts, supersedes, deletes) replayed at chosen
    past times through the annotation module's own row writer, and what the oracle needs of
    them: the rows added later, and the deletion times of the file's rows."""

    def __init__(self, engine, datastack: str, oracle: Oracle, seed: int):
        self.engine, self.ds = engine, datastack
        self.base = oracle.base_rows("synapses")
        self.rng = np.random.default_rng(seed)
        self.alive = [int(i) for i in self.base["id"]]
        self.written: list[int] = []  # ids of rows inserted by the history

    def _row(self) -> dict:
        i, j = self.rng.integers(0, len(self.base["id"]), 2)
        return {
            "pre_pt": {"position": self.base["pre_pt_position"][i].tolist()},
            "ctr_pt": {"position": self.base["ctr_pt_position"][i].tolist()},
            "post_pt": {"position": self.base["post_pt_position"][j].tolist()},
            "size": float(self.rng.integers(1, 100)),
        }

    def _take(self, n: int) -> list[int]:
        return [self.alive.pop(int(self.rng.integers(0, len(self.alive)))) for _ in range(n)]

    def step(self, stamp) -> None:
        """At ``stamp``: 3 inserts, 2 supersedes, 2 deletes (of file rows or earlier writes)."""
        table = catalog.get_table(self.engine, self.ds, "synapses")
        live = table.names.live_q
        old, gone = self._take(2), self._take(2)
        _, cols = ann.columns_from_rows(table.schema, [self._row() for _ in range(5)])
        with self.engine.begin() as conn:
            ids = ann._assign_ids(conn, table, [None] * 5)
            ann._write_rows(conn, table, ids, cols, stamp)
            conn.execute(
                text(
                    f"UPDATE {live} AS t SET deleted = :s, valid = false, superceded_id = u.new "
                    "FROM unnest(CAST(:old AS bigint[]), CAST(:new AS bigint[])) AS u(old, new) "
                    "WHERE t.id = u.old"
                ),
                {"s": stamp, "old": old, "new": ids[3:]},
            )
            conn.execute(
                text(f"UPDATE {live} SET deleted = :s, valid = false WHERE id = ANY(:ids)"),
                {"s": stamp, "ids": gone},
            )
        self.alive += ids
        self.written += ids

    def oracle_args(self) -> dict:
        """``table_at`` arguments for ``synapses`` after every write of the history."""
        rows = ann.get_annotations(self.engine, self.ds, "synapses", self.written)
        extra = [{k: r[k] for k in ("id", "created", "deleted", *POINTS, "size")} for r in rows]
        gone = sorted({int(i) for i in self.base["id"]} - set(self.alive))
        deleted = {r["id"]: r["deleted"] for r in ann.get_annotations(self.engine, self.ds, "synapses", gone)}
        return {"extra_rows": extra, "deleted": deleted}


@pytest.fixture(scope="module")
def history_data(tmp_path_factory):
    now = utcnow().replace(microsecond=0)
    return generate_dataset(
        tmp_path_factory.mktemp("store"),
        synapses=1200,
        cells=30,
        edits=110,
        seed=12,
        start=now - timedelta(days=2),
        span=timedelta(days=1),
    )


def _complete(engine, name: str, when=None, **extra) -> dict:
    when = when or utcnow()
    params = sync_parameters(engine, "complete", name, timestamp=when.isoformat(), chunk_rows=400)
    params["roots_per_chunk"] = 5
    params.update(extra)
    return run_inline(engine, "complete", params, datastack=name).result


def _keyed(rows: dict) -> set[tuple[int, ...]]:
    """Each row as (id, root ids): what can differ between two states of one row."""
    cols = ["id"] + [c for c in rows if c.endswith("_root_id")]
    return {tuple(int(rows[c][i]) for c in cols) for i in range(len(rows["id"]))}


def _changed(before: dict, after: dict) -> int:
    """Rows of ``after`` with no identical row in ``before``."""
    return len(_keyed(after) - _keyed(before))


def _store_rows(engine, name: str, table: str = "synapses") -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {store.store_q(name, table)}")).scalar_one()


def test_twenty_two_versions_over_an_edit_history_equal_the_oracle_also_after_removals(engine, history_data):
    info = history_data
    oracle = Oracle(info.directory)
    name = f"vs_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, info)
    load_dataset(engine, name, info)
    history = History(engine, name, oracle, seed=1)
    # 23 times across the span of the root edits; annotation writes half-way between
    span = info.end - info.start
    times = [info.start + span * (k + 1) / 24 for k in range(23)]
    for a, b in zip([info.start, *times[:-1]], times, strict=True):
        history.step(a + (b - a) / 2)
    edits = np.asarray(sorted(info.edit_timestamps))
    windows = [
        int(np.count_nonzero((edits > a) & (edits <= b))) for a, b in zip(times, times[1:], strict=False)
    ]
    assert sum(1 for w in windows if w) >= 18, f"root edits fell in too few windows: {windows}"
    results = [_complete(engine, name, when) for when in times[:22]]
    args = history.oracle_args()
    want = [oracle.table_at("synapses", when, **args) for when in times]
    # each build after the first wrote exactly the rows that differ from the version before
    # (new ones and those whose roots changed) and closed exactly the ones that went
    for k in range(1, 22):
        new, gone = _changed(want[k - 1], want[k]), _changed(want[k], want[k - 1])
        assert results[k]["merge:synapses"] == {"rows": len(want[k]["id"]), "closed": gone, "written": new}
    n_rows = len(want[0]["id"])

    def check(numbers):
        for n in numbers:
            assert_same_rows(read_version(engine, name, n, "synapses"), want[n - 1])
            assert_same_rows(read_version(engine, name, n, "cells"), oracle.table_at("cells", times[n - 1]))

    check(range(1, 23))
    # versions share their unchanged rows: one row version per distinct row, no more
    before = _store_rows(engine, name)
    assert before == n_rows + sum(r["merge:synapses"]["written"] for r in results[1:])
    removed = [2, 3, 4, 9, 15, 21]
    for n in removed:
        remove_version(engine, Removal(name, n, "test"))
    kept = [n for n in range(1, 23) if n not in removed]
    # what the kept versions still hold stays, all else went
    assert _store_rows(engine, name) == len(set().union(*(_keyed(want[n - 1]) for n in kept))) < before
    check(kept)
    status = {v.version: v.status for v in list_versions(engine, name)}
    assert [n for n, s in status.items() if s == "EXPIRED"] == removed
    # after the removals the next build still starts from the head and is exact
    _complete(engine, name, times[22])
    assert_same_rows(read_version(engine, name, 23, "synapses"), want[22])
    check(kept)
    catalog.drop_datastack(engine, name)


def test_removing_every_version_but_the_newest_leaves_one_copy(engine, loaded, synth, oracle):
    edits = sorted(synth.edit_timestamps)
    times = [edits[i] for i in (5, 20, 40, 60)]
    for when in times:
        _complete(engine, loaded, when)
    for n in (1, 2, 3):
        remove_version(engine, Removal(loaded, n, "test"))
    # only version 4's rows remain: exactly one row version per row of the newest state
    assert _store_rows(engine, loaded) == len(oracle.table_at("synapses", times[-1])["id"])
    assert_same_rows(read_version(engine, loaded, 4, "synapses"), oracle.table_at("synapses", times[-1]))


def test_a_build_with_nothing_changed_writes_no_row(engine, loaded, synth, oracle):
    when = sorted(synth.edit_timestamps)[30]
    _complete(engine, loaded, when)
    rows = _store_rows(engine, loaded)
    result = _complete(engine, loaded, when)
    assert result["merge:synapses"] == {"rows": rows, "closed": 0, "written": 0}
    assert _store_rows(engine, loaded) == rows
    assert_same_rows(read_version(engine, loaded, 2, "synapses"), oracle.table_at("synapses", when))


def test_a_build_that_died_mid_merge_changes_no_published_version_and_the_next_is_exact(
    engine, loaded, synth, oracle
):
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows import engine as wf
    from matengine.workflows import runs

    edits = sorted(synth.edit_timestamps)
    t1, t2, t3 = edits[10], edits[60], edits[70]
    _complete(engine, loaded, t1)
    v1 = read_version(engine, loaded, 1, "synapses")
    params = sync_parameters(engine, "complete", loaded, timestamp=t2.isoformat(), chunk_rows=400)
    params["roots_per_chunk"] = 2
    dead = runs.create_run(engine, "complete", params, datastack=loaded)
    steps = wf.steps_of(runs.get_run(engine, dead))
    merge = next(i for i, s in enumerate(steps) if s.key == "merge:synapses")
    for i in range(merge):  # everything before the merge, then half of its chunks
        for c in wf.plan_step(engine, dead, i):
            wf.run_chunk(engine, dead, i, c)
        wf.claim_finish(engine, dead, i)
        wf.finish_step(engine, dead, i)
    pending = wf.plan_step(engine, dead, merge)
    assert len(pending) >= 4
    for c in pending[: len(pending) // 2]:
        wf.run_chunk(engine, dead, merge, c)
    runs.finish_run(engine, dead, "FAILED", "killed half-way (simulated)")
    assert_same_rows(read_version(engine, loaded, 1, "synapses"), v1)
    _complete(engine, loaded, t3)
    assert_same_rows(read_version(engine, loaded, 1, "synapses"), oracle.table_at("synapses", t1))
    assert_same_rows(read_version(engine, loaded, 3, "synapses"), oracle.table_at("synapses", t3))


def test_an_upload_stamped_before_a_published_version_is_refused_and_writes_nothing(engine, loaded, synth):
    from matengine.errors import InvalidInput
    from matengine.workflows.bulk_upload import check_request

    from .helpers import upload_params

    when = sorted(synth.edit_timestamps)[30]
    _complete(engine, loaded, when)
    table = catalog.get_table(engine, loaded, "synapses")
    with engine.connect() as conn:
        before = conn.execute(text(f"SELECT count(*) FROM {table.names.live_q}")).scalar_one()
    params = upload_params(loaded, synth.directory, "synapses", when.isoformat(), None)
    params["column_mapping"] = {k: v for k, v in params["column_mapping"].items() if "root" not in k}
    with pytest.raises(InvalidInput, match="rows created at or before it would change a published version"):
        check_request(engine, params)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table.names.live_q}")).scalar_one() == before


def test_a_random_sample_of_an_older_version_holds_only_that_versions_rows(engine, loaded, synth, oracle):
    """``TABLESAMPLE`` cannot apply to a view: the sample is drawn from the store and then
    restricted to the version, so it never holds a row version of another version."""
    from matengine.query import version_query

    edits = sorted(synth.edit_timestamps)
    t1, t2 = edits[10], edits[70]
    _complete(engine, loaded, t1)
    _complete(engine, loaded, t2)
    want = oracle.table_at("synapses", t1)
    rows = {
        int(i): (int(a), int(b))
        for i, a, b in zip(want["id"], want["pre_pt_root_id"], want["post_pt_root_id"], strict=True)
    }
    got = version_query(engine, loaded, 1, "synapses", {}, random_sample=600).to_table().to_pydict()
    assert 300 < len(got["id"]) < 900  # ~600 of the version's 3000 rows
    assert len(set(got["id"])) == len(got["id"])
    for i, a, b in zip(got["id"], got["pre_pt_root_id"], got["post_pt_root_id"], strict=True):
        assert rows[i] == (a, b)
