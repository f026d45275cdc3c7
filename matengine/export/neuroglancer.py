"""Neuroglancer precomputed annotations of a version's table, encoded with the ``neuroglancer``
package's :class:`~neuroglancer.write_annotations.AnnotationWriter`.

* geometry: a line from the first to the second bound point when the schema has two or more
  (a synapse: ``pre_pt`` → ``post_pt``), else a point at the first point field;
* properties: the schema's scalar columns (numbers as float32 or int32, booleans as uint8,
  text as a uint32 enum whose labels are the distinct values);
* relationships: one per root-id column (``pre_pt_root_id``, …), so Neuroglancer lists the
  annotations of a selected segment; a root id 0 (never looked up) relates to nothing;
* indexes: by id (one file per annotation), by related segment (one file per root), and a
  **multi-level spatial index** as the format's spec lays it out: level 0 is one cell over the
  whole table, each finer level halves the cells' longest sides, and each annotation is in
  exactly one cell of one level. Level k keeps a uniform sample of the annotations left after
  the coarser levels, the same fraction in every cell (``LIMIT / the fullest cell``), so a
  zoomed-out Neuroglancer loads a few coarse cells and zooming in loads the finer cells in view;
  the finest level takes all that is left.

The package's writer holds a whole table in memory and writes a single-cell spatial index. So
the table is read in passes, each sorted in PostgreSQL: one per spatial level (rows of the
level, ordered by cell, then by a pseudo-random rank) and one per root-id column (ordered by
root). Each batch of rows is encoded into the writer's record layout (``get_dtype``, its
property order) and the files are serialized by the writer's own routines, one cell or one
root at a time. Memory is one batch plus one cell or one root's annotations, whatever the
table's size. An annotation's cell is that of its first point (a synapse's ``pre_pt``).

Which level an annotation is in comes from a 32-bit hash of its id (the first 8 hex digits of
``md5(id)``, computed by PostgreSQL): the same version gives the same files.

Versions are immutable, so a served table is built once into a cache folder (atomically: a
finished folder is renamed into place) and then served as files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text

from matengine.db.connection import driver_connection
from matengine.db.identifiers import quote
from matengine.errors import InvalidInput
from matengine.export.destination import Destination
from matengine.export.source import ROW_GROUP_ROWS, ExportLayout, layout_of, version_relation
from matengine.query import meta
from matengine.query.columns import ColKind
from matengine.query.reader import Fetch, read_batches
from matengine.schemas import AnnotationSchema, get_schema

MAX_ROWS = 20_000_000  # the by-id index is one file per annotation: beyond this, use Parquet/Delta
LIMIT = 10_000  # annotations per cell of a spatial level (the finest level: what is left)
MAX_LEVELS = 14  # a pile of annotations at one spot ends in the finest level, whatever its size
HASH_SPAN = 1 << 32
# a row's pseudo-random rank in [0, 2^32): which level it goes to, and its order in a cell
_HASH_SQL = "CAST(CAST('x' || substr(md5(CAST(id AS text)), 1, 8) AS bit(32)) AS bigint)"
_CELL_KEYS = ["__cx", "__cy", "__cz"]
_INT32 = np.iinfo(np.int32)
_build_lock = threading.Lock()

Put = Callable[[str, bytes], None]


def _geometry(schema: AnnotationSchema) -> tuple[str, list[str]]:
    bound = list(schema.bound_points)
    if len(bound) >= 2:
        return "line", bound[:2]
    points = [f.name for f in schema.points]
    if not points:
        raise InvalidInput(f"schema {schema.name!r} has no point: nothing to show in Neuroglancer")
    return "point", points[:1]


@dataclass(frozen=True)
class Level:
    """One spatial index level: its grid, and the rows (by hash) it holds: ``[lo, hi)``."""

    grid_shape: tuple[int, ...]
    chunk_size: tuple[float, ...]
    hash_lo: int
    hash_hi: int


@dataclass(frozen=True)
class Prop:
    """A property: its spec, the column it shows, and how its values are coded."""

    spec: Any  # neuroglancer.viewer_state.AnnotationPropertySpec
    column: str
    kind: ColKind
    labels: tuple[str, ...] = ()


class _Table:
    """What the passes share: the relation, its columns and geometry."""

    def __init__(self, engine: Engine, datastack: str, version: int, table: str):
        self.vt = meta.version_table(engine, datastack, version, table)
        self.schema = get_schema(self.vt.schema_type)
        self.layout: ExportLayout = layout_of(self.schema)
        self.kind, self.points = _geometry(self.schema)
        self.relation = version_relation(datastack, version, table)
        self.roots = self.layout.root_columns
        self.by_name = {c.name: c for c in self.layout.columns}

    def position(self, pt: str, axis: str) -> str:
        return f"COALESCE({quote(self.by_name[f'{pt}_position_{axis}'].db_column)}, 0)"

    def fetches(self, props: list[Prop]) -> list[Fetch]:
        names = ["id", *self.roots, *(f"{pt}_position_{a}" for pt in self.points for a in "xyz")]
        names += [p.column for p in props if p.column not in names]
        out = []
        for n in names:
            c = self.by_name[n]
            out.append(Fetch(n, quote(c.db_column), c.kind, nullable=c.kind is ColKind.TEXT))
        return out


def _properties(conn: Connection, t: _Table) -> list[Prop]:
    """The scalar columns that can be shown exactly (ints beyond int32 are left out rather than
    shown wrong); text as an enum of its distinct values (one query per text column)."""
    from neuroglancer.viewer_state import AnnotationPropertySpec

    out: list[Prop] = []
    for f in t.schema.fields:
        col = t.by_name.get(f.name)
        if f.is_point or col is None:
            continue
        ref = quote(col.db_column)
        if col.kind is ColKind.FLOAT:
            out.append(Prop(AnnotationPropertySpec(id=f.name, type="float32"), f.name, col.kind))
        elif col.kind is ColKind.BOOL:
            out.append(Prop(AnnotationPropertySpec(id=f.name, type="uint8"), f.name, col.kind))
        elif col.kind is ColKind.INT:
            lo, hi = conn.execute(text(f"SELECT min({ref}), max({ref}) FROM {t.relation}")).one()
            if lo is not None and (lo < _INT32.min or hi > _INT32.max):
                continue
            out.append(Prop(AnnotationPropertySpec(id=f.name, type="int32"), f.name, col.kind))
        elif col.kind is ColKind.TEXT:
            values = conn.execute(text(f"SELECT DISTINCT COALESCE({ref}, '') FROM {t.relation}")).scalars()
            labels = tuple(sorted(values))
            spec = AnnotationPropertySpec(
                id=f.name, type="uint32", enum_values=list(range(len(labels))), enum_labels=list(labels)
            )
            out.append(Prop(spec, f.name, col.kind, labels))
    return out


def _bounds(conn: Connection, t: _Table) -> tuple[int, np.ndarray, np.ndarray]:
    """(rows, lower, upper): integer voxel bounds holding every point of the geometry."""
    lows = [f"min({t.position(pt, a)})" for a in "xyz" for pt in t.points]
    highs = [f"max({t.position(pt, a)})" for a in "xyz" for pt in t.points]
    row = conn.execute(text(f"SELECT count(*), {', '.join(lows + highs)} FROM {t.relation}")).one()
    n, k = int(row[0]), len(t.points)
    if n == 0:
        return 0, np.zeros(3), np.ones(3)
    lo = np.array([min(row[1 + d * k : 1 + (d + 1) * k]) for d in range(3)], np.float64)
    hi = np.array([max(row[1 + 3 * k + d * k : 1 + 3 * k + (d + 1) * k]) for d in range(3)], np.float64)
    return n, np.floor(lo), np.floor(hi) + 1


def _cell_sql(t: _Table, lower: np.ndarray, chunk: tuple[float, ...], grid: tuple[int, ...]) -> list[str]:
    """The cell of a row's first point along x, y, z (constants: numbers we computed)."""
    out = []
    for d, a in enumerate("xyz"):
        pos = t.position(t.points[0], a)
        cell = f"CAST(floor(({pos} - {float(lower[d])!r}) / {float(chunk[d])!r}) AS bigint)"
        out.append(f"LEAST(GREATEST({cell}, 0), {int(grid[d]) - 1})")
    return out


def plan_levels(conn: Connection, t: _Table, lower: np.ndarray, upper: np.ndarray, limit: int) -> list[Level]:
    """The spatial levels, coarse to fine (see the module's docstring)."""
    extent = upper - lower
    grid: tuple[int, ...] = (1, 1, 1)
    chunk = tuple(float(x) for x in extent)
    levels: list[Level] = []
    lo = 0
    while True:
        cells = _cell_sql(t, lower, chunk, grid)
        fullest = conn.execute(
            text(
                f"SELECT COALESCE(max(n), 0) FROM (SELECT count(*) AS n FROM {t.relation} "
                f"WHERE {_HASH_SQL} >= :lo GROUP BY {', '.join(cells)}) AS c"
            ),
            {"lo": lo},
        ).scalar_one()
        if fullest <= limit or len(levels) == MAX_LEVELS - 1:
            levels.append(Level(grid, chunk, lo, HASH_SPAN))  # the finest: all that is left
            return levels
        hi = lo + -(-(HASH_SPAN - lo) * limit // int(fullest))  # a fraction limit/fullest of the rest
        levels.append(Level(grid, chunk, lo, hi))
        lo = hi
        longest = max(chunk)
        halve = [c > longest / 2 for c in chunk]  # the longest sides: cells stay near cubes
        grid = tuple(g * 2 if h else g for g, h in zip(grid, halve, strict=True))
        chunk = tuple(c / 2 if h else c for c, h in zip(chunk, halve, strict=True))


def _batches(conn: Connection, t: _Table, props: list[Prop], extra: list[Fetch], tail: str, params: dict):
    driver = driver_connection(conn)
    return read_batches(driver, tail, params, t.fetches(props) + extra, ROW_GROUP_ROWS)


class _Encoder:
    """Rows to the package's annotations: its record layout, its property order."""

    def __init__(self, t: _Table, props: list[Prop]):
        from neuroglancer import CoordinateSpace
        from neuroglancer.write_annotations import AnnotationWriter

        space = CoordinateSpace(names=["x", "y", "z"], units="nm", scales=list(t.vt.voxel_resolution))
        self.t, self.props = t, {p.spec.id: p for p in props}
        self.writer = AnnotationWriter(
            coordinate_space=space,
            annotation_type=t.kind,
            relationships=t.roots,
            properties=[p.spec for p in props],
        )

    def annotations(self, values: dict[str, np.ndarray]) -> list[Any]:
        from neuroglancer.write_annotations import Annotation

        n = len(values["id"])
        records = np.zeros(n, dtype=self.writer.get_dtype())
        coords = [np.stack([values[f"{pt}_position_{a}"] for a in "xyz"], axis=1) for pt in self.t.points]
        records["geometry"] = np.concatenate(coords, axis=1).astype(np.float32)
        for i, spec in enumerate(self.writer.properties):  # the writer's order (by alignment)
            prop = self.props[spec.id]
            raw = values[prop.column]
            if prop.kind is ColKind.TEXT:
                index = {label: k for k, label in enumerate(prop.labels)}
                records[f"property{i}"] = np.array(
                    [index["" if v is None else str(v)] for v in raw], np.uint32
                )
            else:
                records[f"property{i}"] = raw
        ids = values["id"].astype(np.int64).tolist()
        related = [values[r].astype(np.int64).tolist() for r in self.t.roots]
        return [
            Annotation(ids[i], records[i].tobytes(), [[r[i]] if r[i] else [] for r in related])
            for i in range(n)
        ]

    def many(self, annotations: list[Any]) -> bytes:
        f = io.BytesIO()
        self.writer._serialize_annotations(f, annotations)
        return f.getvalue()

    def one(self, annotation: Any) -> bytes:
        f = io.BytesIO()
        self.writer._serialize_annotation(f, annotation)
        return f.getvalue()


def _grouped(batches: Iterator[Any], enc: _Encoder, keys: list[str]) -> Iterator[tuple[tuple, list[Any]]]:
    """(key, annotations) per run of equal ``keys`` values across batches, in order."""
    current: tuple | None = None
    group: list[Any] = []
    for batch in batches:
        values = batch.values
        anns = enc.annotations(values)
        cols = [values[k].tolist() for k in keys]
        for i, ann in enumerate(anns):
            key = tuple(c[i] for c in cols)
            if key != current:
                if group:
                    yield current, group  # type: ignore[misc]
                current, group = key, []
            group.append(ann)
    if group:
        yield current, group  # type: ignore[misc]


def write_annotations(
    engine: Engine, datastack: str, version: int, table: str, put: Put, *, limit: int = LIMIT
) -> int:
    """Write table ``table`` of version ``version`` as precomputed annotations through ``put``
    (relative path, bytes); ``info`` last, so a folder with an ``info`` is complete."""
    t = _Table(engine, datastack, version, table)
    if t.vt.row_count > MAX_ROWS:
        raise InvalidInput(
            f"table {table!r} has {t.vt.row_count} rows; Neuroglancer annotations are written for at "
            f"most {MAX_ROWS} (export it as Parquet or Delta instead)"
        )
    with engine.connect() as conn:
        props = _properties(conn, t)
        rows, lower, upper = _bounds(conn, t)
        levels = plan_levels(conn, t, lower, upper, limit) if rows else [Level((1, 1, 1), (1.0,) * 3, 0, 0)]
    enc = _Encoder(t, props)
    written = 0
    spatial = []
    for k, level in enumerate(levels):
        fullest = 0
        if level.hash_hi > level.hash_lo:
            cells = _cell_sql(t, lower, level.chunk_size, level.grid_shape)
            extra = [
                Fetch(f"__c{a}", c, ColKind.INT, nullable=False) for a, c in zip("xyz", cells, strict=True)
            ]
            tail = (
                f"FROM {t.relation} WHERE {_HASH_SQL} >= %(lo)s AND {_HASH_SQL} < %(hi)s "
                f"ORDER BY {', '.join(cells)}, {_HASH_SQL}, id"
            )
            with engine.connect() as conn:
                params = {"lo": level.hash_lo, "hi": level.hash_hi}
                for cell, anns in _grouped(_batches(conn, t, props, extra, tail, params), enc, _CELL_KEYS):
                    put(f"spatial{k}/{'_'.join(str(int(c)) for c in cell)}", enc.many(anns))
                    for ann in anns:
                        put(f"by_id/{ann.id}", enc.one(ann))
                    fullest = max(fullest, len(anns))
                    written += len(anns)
        spatial.append(
            {
                "key": f"spatial{k}",
                "grid_shape": list(level.grid_shape),
                "chunk_size": list(level.chunk_size),
                "limit": max(fullest, 1),
            }
        )
    for root in t.roots:
        col = quote(t.by_name[root].db_column)
        tail = f"FROM {t.relation} WHERE {col} IS NOT NULL AND {col} <> 0 ORDER BY {col}, id"
        with engine.connect() as conn:
            for (segment,), anns in _grouped(_batches(conn, t, props, [], tail, {}), enc, [root]):
                put(f"rel_{root}/{int(segment)}", enc.many(anns))
    if written != rows:
        raise RuntimeError(f"table {table}: {written} annotations written, the version holds {rows}")
    info = {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": enc.writer.coordinate_space.to_json(),
        "lower_bound": [float(x) for x in lower],
        "upper_bound": [float(x) for x in upper],
        "annotation_type": t.kind,
        "properties": [p.to_json() for p in enc.writer.properties],
        "relationships": [{"id": r, "key": f"rel_{r}"} for r in t.roots],
        "by_id": {"key": "by_id"},
        "spatial": spatial,
    }
    put("info", json.dumps(info).encode())
    return rows


def write_table_annotations(
    engine: Engine, datastack: str, version: int, table: str, folder: Path, *, limit: int = LIMIT
) -> int:
    """Write table ``table`` of version ``version`` as precomputed annotations into ``folder``."""

    def put(relative: str, data: bytes) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    folder.mkdir(parents=True, exist_ok=True)
    return write_annotations(engine, datastack, version, table, put, limit=limit)


def upload_annotations(engine: Engine, datastack: str, version: int, table: str, dest: Destination) -> int:
    """Write the annotations straight to ``<dest>/<table>.neuroglancer/`` (any store)."""
    fs = dest.filesystem()
    folder = f"{table}.neuroglancer"
    if fs.exists(dest.path(folder)):
        fs.rm(dest.path(folder), recursive=True)

    def put(relative: str, data: bytes) -> None:
        with fs.open(dest.path(folder, relative), "wb") as f:
            f.write(data)

    return write_annotations(engine, datastack, version, table, put)


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
