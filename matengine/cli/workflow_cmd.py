"""Workflow commands: each starts a run, follows it with a progress bar, and exits non-zero if
it failed (``--json``: the final run record; ``--detach``: print the run id and return)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from matengine.cli.output import console, emit, err_console, print_json, print_table

if TYPE_CHECKING:
    from matengine.workflows.params import WorkflowParams

JSON = typer.Option(False, "--json", help="Print the final run record as JSON.")
DETACH = typer.Option(
    False,
    "--detach",
    help="Print the run id and return at once (without a broker the run goes on in a process of its own).",
)


def launch(params: WorkflowParams, *, json_out: bool, detach: bool) -> None:
    """Shared by every workflow command: submit the (checked) parameters, then follow."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from matengine.config import get_settings
    from matengine.db.connection import get_engine
    from matengine.workflows import runs
    from matengine.workflows.submit import ensure_workers, submit_params, wait_for

    engine = get_engine()
    settings = get_settings()
    run_id = submit_params(engine, params, settings, detach=detach)
    if detach:
        emit({"run_id": run_id}, json_out, lambda: console.print(run_id))
        return
    ensure_workers(settings)
    if json_out:
        run = wait_for(engine, run_id)
    else:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeElapsedColumn(),
            console=err_console.get(),
        ) as bar:
            task = bar.add_task(f"run {run_id} {params.kind}", total=None, rows=0)

            def show(r: runs.Run) -> None:
                bar.update(
                    task,
                    total=r.chunks_total or None,
                    completed=r.chunks_done,
                    rows=f"{r.rows_done:,}",
                    description=f"run {r.id} {r.step or params.kind}",
                )

            run = wait_for(engine, run_id, on_progress=show)
    if json_out:
        print_json(run.to_dict())
    else:
        console.print(
            f"run {run.id} {run.kind}: {run.state} — {run.rows_done:,} rows in {run.to_dict()['seconds']} s"
        )
        from rich.markup import escape

        from matengine.cli.flags import as_cli_message

        for e in run.errors:
            err_console.print(f"[red]{escape(as_cli_message(e['message']))}[/red]")
        for warning in run.result.get("warnings") or []:
            err_console.print(f"[yellow]warning:[/yellow] {escape(as_cli_message(warning))}")
    if run.state != "SUCCESS":
        raise typer.Exit(1)


def _mapping(value: str) -> dict[str, Any]:
    path = Path(value)
    text = path.read_text() if not value.lstrip().startswith("{") and path.exists() else value
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"column mapping is neither a JSON file nor JSON: {exc}") from None
    return mapping


def upload(
    datastack: str,
    table: str,
    schema: str = typer.Option(..., help="Annotation schema, e.g. synapse."),
    source: str = typer.Option(..., help="Folder of .npy files: file://, gs://, s3://, http(s)://"),
    column_mapping: str = typer.Option(..., help="JSON file or JSON text {file: column(s)}."),
    roots_timestamp: str = typer.Option(None, help="When the given root ids were valid (ISO)."),
    voxel_resolution: str = typer.Option(None, help="X,Y,Z of the positions (new tables)."),
    chunk_rows: int = typer.Option(None, help="Rows per chunk task."),
    created: str = typer.Option(
        None,
        help="When these annotations came to exist (ISO; default: now). For importing historical tables.",
    ),
    json_out: bool = JSON,
    detach: bool = DETACH,
) -> None:
    """Bulk-upload .npy column files into a table (created from --schema if absent)."""
    from matengine.cli.catalog_cmd import parse_resolution
    from matengine.config import get_settings
    from matengine.db.connection import get_engine
    from matengine.workflows.bulk_upload import UploadParams

    params = UploadParams.build(
        get_engine(),
        get_settings(),
        datastack=datastack,
        table=table,
        schema=schema,
        source=source,
        column_mapping=_mapping(column_mapping),
        roots_timestamp=roots_timestamp,
        voxel_resolution=parse_resolution(voxel_resolution),
        chunk_rows=chunk_rows,
        created=created,
    )
    launch(params, json_out=json_out, detach=detach)


def runs_list(
    run_id: int = typer.Argument(None, help="Show this run."),
    datastack: str = typer.Option(None, help="Only runs of this datastack."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List recent workflow runs, or show one."""
    from matengine.db.connection import get_engine
    from matengine.workflows import runs

    engine = get_engine()
    if run_id is not None:
        run = runs.get_run(engine, run_id).to_dict()
        emit(run, json_out, lambda: console.print(run))
        return
    rows = [r.to_dict() for r in runs.list_runs(engine, datastack)]
    emit(
        rows,
        json_out,
        lambda: print_table(
            rows,
            [
                "id",
                "kind",
                "datastack",
                "table_name",
                "state",
                "step",
                "chunks_done",
                "chunks_total",
                "rows_done",
                "seconds",
                "stalled",
            ],
        ),
    )


def runs_cancel(run_id: int) -> None:
    """Mark an active run CANCELLED and release its locks (its remaining tasks do nothing)."""
    from matengine.db.connection import get_engine
    from matengine.workflows import runs

    runs.finish_run(get_engine(), run_id, "CANCELLED", "cancelled by the operator")
    console.print(f"run {run_id} cancelled")


def runs_resume(run_id: int, json_out: bool = JSON) -> None:
    """Re-enqueue what an active run still has to do (after workers were lost)."""
    from matengine.db.connection import get_engine
    from matengine.workflows.submit import resume, wait_for

    resume(get_engine(), run_id)
    run = wait_for(get_engine(), run_id)
    emit(run.to_dict(), json_out, lambda: console.print(f"run {run_id}: {run.state}"))
    if run.state != "SUCCESS":
        raise typer.Exit(1)


def _sync(
    kind: str,
    datastack: str,
    table: str | None,
    timestamp: str | None,
    json_out: bool,
    detach: bool,
    days_to_expire: int | None = None,
) -> None:
    from matengine.db.connection import get_engine
    from matengine.workflows.params import SyncParams

    params = SyncParams.build(
        get_engine(), kind, datastack, table=table, timestamp=timestamp, days_to_expire=days_to_expire
    )
    launch(params, json_out=json_out, detach=detach)


TABLE = typer.Option(None, "--table", help="Only this table (default: all).")
TIMESTAMP = typer.Option(None, "--timestamp", help="ISO time (UTC if no zone); default now.")


def ingest(
    datastack: str,
    table: str = TABLE,
    timestamp: str = TIMESTAMP,
    json_out: bool = JSON,
    detach: bool = DETACH,
) -> None:
    """Look up supervoxels and roots for annotations that lack them."""
    _sync("ingest", datastack, table, timestamp, json_out, detach)


def update_roots(
    datastack: str,
    table: str = TABLE,
    timestamp: str = TIMESTAMP,
    json_out: bool = JSON,
    detach: bool = DETACH,
) -> None:
    """Replace root ids that expired since the table's last update, as of --timestamp."""
    _sync("update_roots", datastack, table, timestamp, json_out, detach)


def materialize(
    datastack: str,
    timestamp: str = TIMESTAMP,
    days_to_expire: int = typer.Option(None, help="Days until the version expires."),
    json_out: bool = JSON,
    detach: bool = DETACH,
) -> None:
    """Freeze the datastack at --timestamp as a new version (ingests and updates roots first)."""
    _sync("materialize", datastack, None, timestamp, json_out, detach, days_to_expire)


def complete(
    datastack: str,
    timestamp: str = TIMESTAMP,
    days_to_expire: int = typer.Option(None, help="Days until the version expires."),
    json_out: bool = JSON,
    detach: bool = DETACH,
) -> None:
    """Ingest → update roots → materialize, as one run."""
    _sync("complete", datastack, None, timestamp, json_out, detach, days_to_expire)


def export(
    datastack: str,
    version: int = typer.Option(..., "--version", help="The version to export."),
    to: str = typer.Option(..., "--to", help="Destination folder: file:///…, gs://bucket/…, s3://bucket/…"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or delta."),
    tables: list[str] = typer.Option(None, "--tables", help="Only these tables or views (repeat, or a,b)."),
    chunk_rows: int = typer.Option(None, help="Rows per file (default: the chunk_rows setting)."),
    neuroglancer: bool = typer.Option(
        False, "--neuroglancer", help="Also write Neuroglancer precomputed annotations of each table."
    ),
    order: str = typer.Option(
        "root",
        "--order",
        help="root: rows sorted and cut by root id (one root reads little); "
        "space: by a Z-order key of the first point (one box reads little).",
    ),
    json_out: bool = JSON,
    detach: bool = DETACH,
) -> None:
    """Export a version's tables and views as Parquet or Delta Lake datasets, with a manifest."""
    from matengine.db.connection import get_engine
    from matengine.workflows.export import ExportParams

    names = [n for item in tables or [] for n in item.split(",") if n]
    params = ExportParams.build(
        get_engine(),
        datastack,
        version,
        to=to,
        fmt=fmt,
        tables=names or None,
        chunk_rows=chunk_rows,
        neuroglancer=neuroglancer,
        order=order,
    )
    launch(params, json_out=json_out, detach=detach)
