"""Helpers of the API tests: load a synthetic dataset through the real workflows, compute
expected rows independently (the time rule over the inserted data, roots from the oracle),
and compare data frames with them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from matengine import catalog
from matengine.timeutil import to_utc


def run_inline(engine: Engine, kind: str, params: dict, *, datastack: str, table: str | None = None):
    import matengine.workflows.registry  # noqa: F401
    from matengine.workflows import runs
    from matengine.workflows.engine import execute_inline

    run_id = runs.create_run(engine, kind, params, datastack=datastack, table_name=table)
    run = execute_inline(engine, run_id)
    assert run.state == "SUCCESS", run.errors
    return run


def complete(engine: Engine, datastack: str, when: datetime) -> int:
    from matengine.workflows.submit import sync_parameters

    # versions of a 2024 timeline would be long expired with the default lifetime
    params = sync_parameters(
        engine, "complete", datastack, timestamp=when.isoformat(), days_to_expire=365 * 100
    )
    return int(run_inline(engine, "complete", params, datastack=datastack).result["version"])


def ingest(engine: Engine, datastack: str, when: datetime) -> None:
    from matengine.workflows.submit import sync_parameters

    params = sync_parameters(engine, "ingest", datastack, timestamp=when.isoformat())
    run_inline(engine, "ingest", params, datastack=datastack)


def upload_synapses(
    engine: Engine, datastack: str, directory: Path, created: datetime, roots_at: datetime
) -> None:
    folder = directory / "synapses"
    mapping = json.loads((folder / "column_mapping.json").read_text())
    params = {
        "datastack": datastack,
        "table": "synapses",
        "schema": "synapse",
        "source": f"file://{folder}",
        "column_mapping": mapping,
        "roots_timestamp": roots_at.isoformat(),
        "created": created.isoformat(),
    }
    run_inline(engine, "bulk_upload", params, datastack=datastack, table="synapses")


@dataclass
class LiveRows:
    """What the test inserted: per row id, created/deleted, and the file columns."""

    base: dict[str, np.ndarray]
    created: np.ndarray  # datetime64[us] (UTC)
    deleted: np.ndarray  # datetime64[us], NaT = never

    def alive(self, t: datetime) -> np.ndarray:
        ts = np.datetime64(to_utc(t).replace(tzinfo=None), "us")
        dead = ~np.isnat(self.deleted) & (self.deleted <= ts)
        return (self.created <= ts) & ~dead


def set_times(
    engine: Engine,
    datastack: str,
    table: str,
    ids: np.ndarray,
    *,
    created: datetime | None = None,
    deleted: datetime | None = None,
) -> None:
    t = catalog.get_table(engine, datastack, table)
    with engine.begin() as conn:
        if created is not None:
            conn.execute(
                text(f"UPDATE {t.names.live_q} SET created = :c WHERE id = ANY(:ids)"),
                {"c": created, "ids": [int(i) for i in ids]},
            )
        if deleted is not None:
            conn.execute(
                text(f"UPDATE {t.names.live_q} SET deleted = :d, valid = false WHERE id = ANY(:ids)"),
                {"d": deleted, "ids": [int(i) for i in ids]},
            )


def expected_synapses(rows: LiveRows, oracle, t: datetime) -> pd.DataFrame:
    """Rows in the state at ``t`` with their roots at ``t`` (oracle), sorted by id."""
    keep = rows.alive(t)
    b = {k: v[keep] for k, v in rows.base.items()}
    out = {"id": b["id"].astype(np.int64)}
    for pt in ("pre_pt", "post_pt"):
        sv = b[f"{pt}_supervoxel_id"]
        out[f"{pt}_supervoxel_id"] = sv.astype(np.int64)
        out[f"{pt}_root_id"] = np.asarray(oracle.roots_at(sv, t), np.uint64).astype(np.int64)
    for pt in ("pre_pt", "ctr_pt", "post_pt"):
        for j, a in enumerate("xyz"):
            out[f"{pt}_position_{a}"] = b[f"{pt}_position"][:, j].astype(float)
    out["size"] = b["size"]
    return pd.DataFrame(out).sort_values("id").reset_index(drop=True)


def assert_frame_matches(got: pd.DataFrame, want: pd.DataFrame, columns: list[str] | None = None) -> None:
    columns = columns or list(want.columns)
    got = got.sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == want["id"].tolist()
    for c in columns:
        if c == "id":
            continue
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g.astype(float), w, err_msg=c)
        else:
            bad = np.flatnonzero(g.astype(np.int64) != w.astype(np.int64))
            assert bad.size == 0, f"{c}: {bad.size} rows differ, e.g. id {want['id'][bad[0]]}"


def days(n: float) -> timedelta:
    return timedelta(days=n)
