"""Bulk upload, ingest, versions and queries for every schema *shape* of the registry: one
bound point, two bound points, no point (a reference), a reference with a point, a derived
point (with its chunk values), a derived point only (``derived_spatial_point``, mapped by the
field's names ``position``, ``dependent_chunk``, ``level``), an unbound point only, and
optional points.

Columns are written as .npy files from the synthetic dataset's synapse positions; the version
and caveclient's queries of it (and a live query) are compared with what was written, roots
from the oracle.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from matengine import auth, catalog
from matengine.db.identifiers import quote, version_schema
from matengine.schemas import SCHEMAS, AnnotationSchema, Kind
from matengine.synth.verify import read_columns

from .helpers import complete, ingest, run_inline

N = 40
SHAPES = {
    "one point": "bound_tag_bool",
    "two points": "cell_similarity",
    "no point (reference)": "reference_tag_float",
    "reference with a point": "reference_point",
    "derived point": "derived_tag",
    "derived point only": "derived_spatial_point",
    "unbound point only": "pt_bool_valid",
    "optional points": "contact",
}


def _columns(
    schema: AnnotationSchema, positions: np.ndarray, target_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """One .npy column per logical column (positions (N, 3)); ids 1..N."""
    cols: dict[str, np.ndarray] = {"id": np.arange(1, N + 1, dtype=np.int64)}
    rng = np.random.default_rng(len(schema.name))
    for j, f in enumerate(schema.fields):
        if f.is_point:
            cols[f"{f.name}_position"] = positions[(np.arange(N) * 3 + j) % len(positions)]
        elif f.kind is Kind.REFERENCE:
            cols[f.name] = target_ids[np.arange(N) % len(target_ids)]
        elif f.kind is Kind.FLOAT:
            cols[f.name] = rng.random(N)
        elif f.kind is Kind.INT:
            cols[f.name] = rng.integers(0, 1000, N).astype(np.int64)
        elif f.kind is Kind.BOOL:
            cols[f.name] = rng.random(N) < 0.5
        elif f.kind is Kind.STRING:
            cols[f.name] = np.array([f"{f.name}-{i}" for i in range(N)])
    return cols


def _write(folder: Path, cols: dict[str, np.ndarray], schema: AnnotationSchema) -> dict[str, str]:
    """One file per column; mapped by our names, or the field's for derived_spatial_point."""
    folder.mkdir(parents=True)
    for name, values in cols.items():
        np.save(folder / f"{name}.npy", values)
    theirs = {ours: field for field, ours in schema.top_level_names().items()}
    return {name: theirs.get(name, name) for name in cols}


@pytest.fixture(scope="module")
def shapes(engine, loaded, server, tmp_path_factory):
    from caveclient import CAVEclient

    logging.getLogger("caveclient").setLevel(logging.ERROR)
    ds = f"shape_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        ds,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    root = tmp_path_factory.mktemp("shapes")
    positions = loaded.rows.base["pre_pt_position"]
    created = loaded.info.start.isoformat()
    catalog.create_table(engine, ds, "target", schema="bound_tag")
    target_cols = {
        "id": np.arange(1, 11, dtype=np.int64),
        "pt_position": positions[:10],
        "tag": np.array(["t"] * 10),
    }
    written: dict[str, dict[str, np.ndarray]] = {}
    for i, (name, mapping_cols) in enumerate([("target", target_cols)] + [
        (f"u{k}", _columns(SCHEMAS[s], positions, target_cols["id"])) for k, s in enumerate(SHAPES.values())
    ]):  # fmt: skip
        schema = "bound_tag" if name == "target" else list(SHAPES.values())[i - 1]
        if name != "target":
            catalog.create_table(
                engine,
                ds,
                name,
                schema=schema,
                reference_table="target" if SCHEMAS[schema].is_reference else None,
            )
        mapping = _write(root / name, mapping_cols, SCHEMAS[schema])
        params = {
            "datastack": ds, "table": name, "schema": schema, "source": f"file://{root / name}",
            "column_mapping": mapping, "created": created,
        }  # fmt: skip
        run_inline(engine, "bulk_upload", params, datastack=ds, table=name)
        written[name] = mapping_cols
    now = datetime.now(UTC)
    ingest(engine, ds, now)
    version = complete(engine, ds, now)
    token = auth.create_token(engine, ds, "view", "shapes")[1]
    client = CAVEclient(ds, server_address=server.url, auth_token=token, write_server_cache=False)
    yield ds, version, now, written, client
    catalog.drop_datastack(engine, ds)


def _check(got: dict, want: dict, schema: AnnotationSchema, loaded, t: datetime, where: str) -> None:
    order = np.argsort(np.asarray(got["id"]))
    assert np.asarray(got["id"])[order].tolist() == want["id"].tolist(), where
    res = loaded.info.annotation_resolution
    for f in schema.fields:
        if f.is_point:
            pos = np.asarray(got[f"{f.name}_position"], float)[order]
            np.testing.assert_allclose(pos, want[f"{f.name}_position"], err_msg=f"{where} {f.name}")
            if f.kind is Kind.BOUND_POINT:
                sv = loaded.oracle.supervoxels_at(want[f"{f.name}_position"], res)
                roots = np.asarray(loaded.oracle.roots_at(sv, t), np.uint64)
                got_sv = np.asarray(got[f"{f.name}_supervoxel_id"]).astype(np.int64)[order]
                got_root = np.asarray(got[f"{f.name}_root_id"]).astype(np.int64)[order]
                assert (got_sv == sv.astype(np.int64)).all(), f"{where} {f.name} supervoxels"
                assert (got_root == roots.astype(np.int64)).all(), f"{where} {f.name} roots"
        else:
            g, w = np.asarray(got[f.name])[order], want[f.name]
            if w.dtype.kind == "f":
                np.testing.assert_allclose(g.astype(float), w, err_msg=f"{where} {f.name}")
            else:
                assert g.tolist() == w.tolist(), f"{where} {f.name}"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_upload_ingest_version_and_queries(shapes, shape, engine, loaded):
    ds, version, now, written, client = shapes
    schema = SCHEMAS[SHAPES[shape]]
    name = f"u{list(SHAPES).index(shape)}"
    want = written[name]
    table_q = quote(version_schema(ds, version), name)
    _check(read_columns(engine, table_q, schema.name), want, schema, loaded, now, f"{shape}: version table")
    df = client.materialize.query_table(name, materialization_version=version, merge_reference=False)
    _check({c: df[c].tolist() for c in df.columns}, want, schema, loaded, now, f"{shape}: query_table")
    t = datetime.now(UTC)
    df = client.materialize.live_live_query(name, t)
    _check({c: df[c].tolist() for c in df.columns}, want, schema, loaded, t, f"{shape}: live query")


def test_derived_spatial_point_bounding_box_counts_and_export(shapes, engine, loaded, tmp_path):
    import pyarrow.parquet as pq

    from matengine.synth.verify import columns_from_arrow
    from matengine.workflows.export import export_lock, export_parameters

    ds, version, now, written, client = shapes
    name = f"u{list(SHAPES).index('derived point only')}"
    schema = SCHEMAS["derived_spatial_point"]
    want = written[name]
    pos = want["pt_position"]
    lo, hi = np.percentile(pos, 20, axis=0).tolist(), np.percentile(pos, 80, axis=0).tolist()
    inside = ((pos >= lo) & (pos <= hi)).all(axis=1)
    assert 0 < inside.sum() < N
    sub = {k: v[inside] for k, v in want.items()}
    df = client.materialize.query_table(
        name, materialization_version=version, filter_spatial_dict={"pt_position": [lo, hi]}
    )
    _check({c: df[c].tolist() for c in df.columns}, sub, schema, loaded, now, "version bounding box")
    t = datetime.now(UTC)
    df = client.materialize.live_live_query(name, t, filter_spatial_dict={name: {"pt_position": [lo, hi]}})
    _check({c: df[c].tolist() for c in df.columns}, sub, schema, loaded, t, "live bounding box")
    assert client.materialize.get_annotation_count(name, version=version) == N
    assert client.annotation.get_annotation_count(name) == N
    params = export_parameters(
        engine, ds, version, to=f"file://{tmp_path}/out", tables=[name], neuroglancer=True
    )
    run_inline(engine, "export", params, datastack=ds, table=export_lock(version))
    got = columns_from_arrow(pq.read_table(tmp_path / "out" / name), schema.name)
    _check(got, want, schema, loaded, now, "parquet export")
    info = json.loads((tmp_path / "out" / f"{name}.neuroglancer" / "info").read_text())
    assert info["annotation_type"] == "point"
    assert sorted(p["id"] for p in info["properties"]) == ["pt_dependent_chunk", "pt_level"]
    assert [r["id"] for r in info["relationships"]] == ["pt_root_id"]
