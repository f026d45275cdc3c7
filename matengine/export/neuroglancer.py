"""Neuroglancer precomputed annotations of a version's table, written by the ``neuroglancer``
package's :class:`~neuroglancer.write_annotations.AnnotationWriter`.

* geometry: a line from the first to the second bound point when the schema has two or more
  (a synapse: ``pre_pt`` → ``post_pt``), else a point at the first point field;
* properties: the schema's scalar columns (numbers as float32 or int32, booleans as uint8,
  text as a uint32 enum whose labels are the distinct values);
* relationships: one per root-id column (``pre_pt_root_id``, …), so Neuroglancer lists the
  annotations of a selected segment; a root id 0 (never looked up) relates to nothing;
* indexes: the writer's by-id index (one file per annotation) and its one-cell spatial index.

The writer holds the table in memory and writes a file per annotation: fine for the tables
people browse (up to a few hundred thousand rows), not for a 300M-row synapse table
(:data:`MAX_ROWS` refuses those; use the Parquet/Delta export there).

Versions are immutable, so a served table is built once into a cache folder (atomically: a
finished folder is renamed into place) and then served as files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from matengine.errors import InvalidInput
from matengine.export.destination import Destination
from matengine.export.source import ExportLayout, chunk_batches, layout_of, version_relation
from matengine.query import meta
from matengine.query.columns import ColKind
from matengine.schemas import AnnotationSchema, get_schema

MAX_ROWS = 2_000_000
_INT32 = np.iinfo(np.int32)
_build_lock = threading.Lock()


def _geometry(schema: AnnotationSchema) -> tuple[str, list[str]]:
    bound = list(schema.bound_points)
    if len(bound) >= 2:
        return "line", bound[:2]
    points = [f.name for f in schema.points]
    if not points:
        raise InvalidInput(f"schema {schema.name!r} has no point: nothing to show in Neuroglancer")
    return "point", points[:1]


def _read_all(engine: Engine, relation: str, layout: ExportLayout) -> dict[str, np.ndarray]:
    lo, hi = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
    parts: dict[str, list[Any]] = {c.name: [] for c in layout.columns}
    with engine.connect() as conn:
        for batch in chunk_batches(conn, relation, layout, lo, hi):
            for name in parts:
                parts[name].append(batch.column(name).to_numpy(zero_copy_only=False))
    return {k: (np.concatenate(v) if v else np.array([])) for k, v in parts.items()}


def _properties(schema: AnnotationSchema, layout: ExportLayout, data: dict[str, np.ndarray]):
    """(spec, values) per scalar column; columns that cannot be shown exactly are left out."""
    from neuroglancer.viewer_state import AnnotationPropertySpec

    out: list[tuple[Any, np.ndarray]] = []
    by_name = {c.name: c for c in layout.columns}
    for f in schema.fields:
        if f.is_point:
            continue
        col = by_name.get(f.name)
        if col is None:
            continue
        values = data[f.name]
        if col.kind is ColKind.FLOAT:
            out.append((AnnotationPropertySpec(id=f.name, type="float32"), values.astype(np.float32)))
        elif col.kind is ColKind.BOOL:
            out.append((AnnotationPropertySpec(id=f.name, type="uint8"), values.astype(np.uint8)))
        elif col.kind is ColKind.INT:
            ints = values.astype(np.int64)
            if len(ints) and (ints.min() < _INT32.min or ints.max() > _INT32.max):
                continue  # would not survive int32: not shown rather than shown wrong
            out.append((AnnotationPropertySpec(id=f.name, type="int32"), ints.astype(np.int32)))
        elif col.kind is ColKind.TEXT:
            labels = sorted({"" if v is None else str(v) for v in values})
            index = {label: i for i, label in enumerate(labels)}
            codes = np.array([index["" if v is None else str(v)] for v in values], np.uint32)
            spec = AnnotationPropertySpec(
                id=f.name, type="uint32", enum_values=list(range(len(labels))), enum_labels=labels
            )
            out.append((spec, codes))
    return out


def write_table_annotations(engine: Engine, datastack: str, version: int, table: str, folder: Path) -> int:
    """Write table ``table`` of version ``version`` as precomputed annotations into ``folder``."""
    from neuroglancer import CoordinateSpace
    from neuroglancer.write_annotations import AnnotationWriter

    vt = meta.version_table(engine, datastack, version, table)
    if vt.row_count > MAX_ROWS:
        raise InvalidInput(
            f"table {table!r} has {vt.row_count} rows; Neuroglancer annotations are written for at "
            f"most {MAX_ROWS} (export it as Parquet or Delta instead)"
        )
    schema = get_schema(vt.schema_type)
    layout = layout_of(schema)
    kind, points = _geometry(schema)
    data = _read_all(engine, version_relation(datastack, version, table), layout)
    props = _properties(schema, layout, data)
    roots = layout.root_columns
    space = CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(vt.voxel_resolution))
    writer = AnnotationWriter(
        coordinate_space=space, annotation_type=kind, relationships=roots, properties=[p for p, _ in props]
    )
    coords = [
        np.stack([data[f"{pt}_position_{a}"] for a in "xyz"], axis=1).astype(np.float64) for pt in points
    ]
    ids = data["id"].astype(np.int64)
    for i in range(len(ids)):
        related = {r: ([int(data[r][i])] if data[r][i] != 0 else []) for r in roots}
        values = {spec.id: vals[i].item() for spec, vals in props}
        if kind == "line":
            writer.add_line(coords[0][i], coords[1][i], id=int(ids[i]), **values, **related)
        else:
            writer.add_point(coords[0][i], id=int(ids[i]), **values, **related)
    folder.mkdir(parents=True, exist_ok=True)
    writer.write(folder)
    return len(ids)


def upload_annotations(engine: Engine, datastack: str, version: int, table: str, dest: Destination) -> int:
    """Write the annotations locally, then copy them to ``<dest>/<table>.neuroglancer/``."""
    fs = dest.filesystem()
    remote = dest.path(f"{table}.neuroglancer")
    with tempfile.TemporaryDirectory(prefix="matengine-ng-") as tmp:
        local = Path(tmp) / "annotations"
        rows = write_table_annotations(engine, datastack, version, table, local)
        if fs.exists(remote):
            fs.rm(remote, recursive=True)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                with fs.open(
                    dest.path(f"{table}.neuroglancer", path.relative_to(local).as_posix()), "wb"
                ) as f:
                    f.write(path.read_bytes())
    return rows


def cached_annotations(engine: Engine, cache_root: Path, datastack: str, version: int, table: str) -> Path:
    """The folder of a version table's annotations, built on first use."""
    info = meta.get_version(engine, datastack, version)  # none for a version gone or not ready
    meta.version_table(engine, datastack, version, table)
    # a version number can come back after a failed version was removed: T names the content
    stamp = info.time_stamp.strftime("%Y%m%dT%H%M%S%fZ")
    folder = cache_root / datastack / f"v{int(version)}-{stamp}" / table
    if (folder / "info").is_file():
        return folder
    with _build_lock:
        if not (folder / "info").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{table}-", dir=folder.parent))
            try:
                write_table_annotations(engine, datastack, version, table, tmp)
                if folder.exists():
                    shutil.rmtree(folder)
                try:
                    os.replace(tmp, folder)
                except OSError:  # another server process finished the same build first
                    if not (folder / "info").is_file():
                        raise
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    return folder
