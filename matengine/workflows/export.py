"""Export a version's tables as Parquet or Delta Lake datasets (and, on request, Neuroglancer
precomputed annotations) to file://, gs:// or s3://.

Steps: ``prepare`` (check the version, the tables and the destination; claim the destination
with a marker file) → ``export:<table>`` per table (plan: clear the table's folder and cut its
rows into ranges of the sort key, root id or space key as ``order`` asks; each chunk writes
one Parquet file, named by its chunk number, so a rerun of a chunk rewrites the same bytes;
finish: the Delta log, for ``delta``) →
``neuroglancer:<table>`` per table when asked → ``manifest`` (row counts, schema and sha256 of
every file, read back from the destination).

Chunks only read PostgreSQL and write files whose names and bytes depend on the version alone,
so a chunk run twice (a redelivery, or a resume after SIGKILL) leaves what one run leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine

from matengine import catalog
from matengine.config import get_settings
from matengine.errors import InvalidInput
from matengine.export import parquet_files
from matengine.export.destination import MARKER, Destination
from matengine.export.manifest import build_manifest, write_manifest
from matengine.export.source import (
    ORDERS,
    SpaceKey,
    layout_of,
    plan_ranges,
    space_key,
    version_relation,
)
from matengine.export.views import (
    plan_view_ranges,
    version_views,
    view_at,
    view_part,
    view_schema,
)
from matengine.query import meta
from matengine.schemas import get_schema
from matengine.workflows.engine import Step, StepContext, workflow
from matengine.workflows.params import WorkflowParams, parameters, parameters_of
from matengine.workflows.runs import Run

FORMATS = ("parquet", "delta")


def export_parameters(
    engine: Engine,
    datastack: str,
    version: int,
    *,
    to: str,
    fmt: str = "parquet",
    tables: list[str] | None = None,
    chunk_rows: int | None = None,
    neuroglancer: bool = False,
    order: str = "root",
) -> dict[str, Any]:
    """The checked parameters of an export run (refused here, before a run is recorded).

    ``order``: ``root`` (rows sorted and cut by the first root-id column: one root reads
    little) or ``space`` (by a Morton key of the first point: one box reads little)."""
    catalog.get_datastack(engine, datastack)
    if isinstance(version, bool) or not isinstance(version, Integral):
        raise InvalidInput("version must be an integer", field="version")
    meta.get_version(engine, datastack, int(version))
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    if not isinstance(order, str) or order not in ORDERS:
        raise InvalidInput(
            f"order must be one of {', '.join(ORDERS)} (root: one root reads little; "
            "space: one box reads little)",
            field="order",
        )
    size = chunk_rows if chunk_rows is not None else get_settings().chunk_rows
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
        raise InvalidInput("chunk_rows must be a positive integer", field="chunk_rows")
    available = [t.table_name for t in meta.version_tables(engine, datastack, int(version))]
    in_version = [v.name for v in version_views(engine, datastack, int(version))]
    named = list(tables) if tables else available + in_version
    if len(set(named)) != len(named):
        raise InvalidInput("a table is named twice", field="tables")
    chosen = [t for t in named if t in available]
    chosen_views = [t for t in named if t not in available]
    for t in chosen_views:
        if t not in in_version:
            meta.version_table(engine, datastack, int(version), t)  # raises NotFound, names the table
    for t in chosen:
        if t in in_version:  # one dataset folder per name
            raise InvalidInput(
                f"view {t!r} has the name of a table: name the tables to export without it",
                field="tables",
            )
    if neuroglancer:
        from matengine.export.neuroglancer import MAX_ROWS

        for t in chosen:
            rows = meta.version_table(engine, datastack, int(version), t).row_count
            if rows > MAX_ROWS:
                raise InvalidInput(
                    f"table {t!r} has {rows} rows; Neuroglancer annotations are written for at most "
                    f"{MAX_ROWS} (leave out --neuroglancer, or that table)",
                    field="neuroglancer",
                )
    dest = Destination.parse(to)
    return {
        "version": int(version),
        "tables": chosen,
        "views": chosen_views,
        "format": fmt,
        "to": dest.url,
        "chunk_rows": int(size),
        "neuroglancer": bool(neuroglancer),
        "order": order,
    }


def export_lock(version: int) -> str:
    """What an export run locks: its version (not the datastack: syncs and new versions go on
    meanwhile; a second export of the same version waits)."""
    return f"export:v{int(version)}"


def _params(ctx: StepContext) -> ExportParams:
    p = ctx.parameters
    if not isinstance(p, ExportParams):
        raise TypeError(f"expected the parameters of an export run, got {type(p).__name__}")
    return p


def _destination(ctx: StepContext) -> Destination:
    return Destination.parse(_params(ctx).to)


class PrepareExportStep(Step):
    """Claim the destination: it must be empty or hold an earlier matengine export."""

    key = "prepare"

    def plan(self, ctx: StepContext) -> list[Any]:
        version = meta.get_version(ctx.engine, ctx.run.datastack, _params(ctx).version)
        dest = _destination(ctx)
        fs = dest.filesystem()
        marker = dest.path(MARKER)
        if fs.exists(dest.root) and not fs.exists(marker) and fs.ls(dest.root):
            raise InvalidInput(
                "destination is not empty and holds no matengine export: choose an empty folder",
                field="to",
            )
        with fs.open(marker, "wb") as f:
            f.write(f"{ctx.run.datastack} version {version.version}\n".encode())
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0


class ExportTableStep(Step):
    """One table: one Parquet file per range of its sort key (root id, or space key for
    ``order: space``); the Delta log on top for ``delta``.

    A chunk's spec is ``[index, lo, hi]``, plus the space key's bounds in space order (read
    once when planning, so every chunk, rerun or resumed, uses the same key)."""

    def __init__(self, datastack: str, table: str):
        self.datastack, self.table = datastack, table
        self.key = f"export:{table}"

    def _layout(self, ctx: StepContext):
        vt = meta.version_table(ctx.engine, self.datastack, _params(ctx).version, self.table)
        return layout_of(get_schema(vt.schema_type))

    def plan(self, ctx: StepContext) -> list[Any]:
        dest = _destination(ctx)
        fs = dest.filesystem()
        folder = dest.path(self.table)
        if fs.exists(folder):  # an earlier export's files: this run writes the table afresh
            fs.rm(folder, recursive=True)
        p = _params(ctx)
        relation = version_relation(self.datastack, p.version, self.table)
        layout = self._layout(ctx)
        with ctx.engine.connect() as conn:
            space = space_key(conn, relation, layout) if p.order == "space" else None
            ranges = plan_ranges(conn, relation, layout, p.chunk_rows, space)
        ranges = ranges or [[0, -1]]  # an empty table still gets one (empty) file with its schema
        extra = [space.to_json()] if space is not None else []
        return [[i, lo, hi, *extra] for i, (lo, hi) in enumerate(ranges)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        index, lo, hi, *extra = spec
        space = SpaceKey.from_json(extra[0]) if extra else None
        dest = _destination(ctx)
        relation = version_relation(self.datastack, _params(ctx).version, self.table)
        return parquet_files.write_part(
            dest,
            self.table,
            parquet_files.part_name(index),
            self._layout(ctx),
            conn,
            relation,
            lo,
            hi,
            space,
        )

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        dest = _destination(ctx)
        names = [parquet_files.part_name(spec[0]) for spec in plan]
        if _params(ctx).format == "delta":
            from matengine.export.delta import commit_delta_log

            commit_delta_log(dest, self.table, names, self._layout(ctx).schema)
        return {}


class ExportViewStep(Step):
    """One view: its rows at the version, as querying it answers, one Parquet file per range
    of its first table's id; the Delta log on top for ``delta``."""

    def __init__(self, datastack: str, view: str):
        self.datastack, self.view = datastack, view
        self.key = f"export-view:{view}"

    def plan(self, ctx: StepContext) -> list[Any]:
        dest = _destination(ctx)
        fs = dest.filesystem()
        folder = dest.path(self.view)
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
        p = _params(ctx)
        view = view_at(ctx.engine, self.datastack, p.version, self.view)
        with ctx.engine.connect() as conn:
            ranges = plan_view_ranges(conn, view, p.version, p.chunk_rows)
        ranges = ranges or [[0, -1]]
        return [[i, lo, hi] for i, (lo, hi) in enumerate(ranges)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        index, lo, hi = spec
        version = _params(ctx).version
        view = view_at(ctx.engine, self.datastack, version, self.view)
        schema, batches = view_part(ctx.engine, view, version, lo, hi)
        return parquet_files.write_batches(
            _destination(ctx), self.view, parquet_files.part_name(index), schema, batches
        )

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        if _params(ctx).format == "delta":
            from matengine.export.delta import commit_delta_log

            version = _params(ctx).version
            view = view_at(ctx.engine, self.datastack, version, self.view)
            names = [parquet_files.part_name(index) for index, _, _ in plan]
            commit_delta_log(_destination(ctx), self.view, names, view_schema(ctx.engine, view, version))
        return {}


class NeuroglancerStep(Step):
    """The table as Neuroglancer precomputed annotations under ``<table>.neuroglancer/``."""

    def __init__(self, datastack: str, table: str):
        self.datastack, self.table = datastack, table
        self.key = f"neuroglancer:{table}"

    def plan(self, ctx: StepContext) -> list[Any]:
        return [0]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        from matengine.export.neuroglancer import upload_annotations

        return upload_annotations(
            ctx.engine, self.datastack, _params(ctx).version, self.table, _destination(ctx)
        )


class ManifestStep(Step):
    key = "manifest"

    def plan(self, ctx: StepContext) -> list[Any]:
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        dest = _destination(ctx)
        p = _params(ctx)
        manifest = build_manifest(
            ctx.engine,
            p.datastack,
            dest,
            version=p.version,
            tables=p.tables,
            views=p.views,
            fmt=p.format,
            neuroglancer=p.neuroglancer,
            order=p.order,
        )
        write_manifest(dest, manifest)
        return {
            "export": {
                "to": dest.url,
                "manifest": dest.url_of("manifest.json"),
                "rows": {
                    t: info["rows"]
                    for t, info in [*manifest["tables"].items(), *manifest.get("views", {}).items()]
                },
            }
        }


@workflow("export")
def _export(run: Run) -> list[Step]:
    p = parameters_of(run)
    assert isinstance(p, ExportParams)
    ds, tables = p.datastack, list(p.tables)
    steps: list[Step] = [PrepareExportStep()]
    steps += [ExportTableStep(ds, t) for t in tables]
    steps += [ExportViewStep(ds, v) for v in p.views]
    if p.neuroglancer:
        steps += [NeuroglancerStep(ds, t) for t in tables]
    return steps + [ManifestStep()]


@parameters("export")
@dataclass(frozen=True)
class ExportParams(WorkflowParams):
    """The typed parameters of an export run (docs/design.md §12), checked by
    :func:`export_parameters`; stored as the same JSON the steps read."""

    KIND: ClassVar[str] = "export"
    version: int
    tables: tuple[str, ...]
    format: str
    to: str
    chunk_rows: int
    neuroglancer: bool = False
    views: tuple[str, ...] = ()
    order: str = "root"  # root | space (docs/export.md, "Layout")

    @property
    def lock_table(self) -> str | None:
        return export_lock(self.version)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.pop("datastack")  # a column of the run
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportParams:
        return super().from_json(
            {**data, "tables": tuple(data.get("tables", ())), "views": tuple(data.get("views", ()))}
        )

    @classmethod
    def build(cls, engine: Engine, datastack: str, version: int, **options: Any) -> ExportParams:
        return cls.from_json(
            {**export_parameters(engine, datastack, version, **options), "datastack": datastack}
        )
