"""The ``matengine`` command line. Each group lives in its own module; this one wires them.

Start-up time matters (``matengine --help`` in well under a second): the command modules import
only typer and the standard library at module level, and everything else — settings, the
database, Celery, FastAPI, pyarrow — inside the command that needs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from matengine.errors import MatengineError

app = typer.Typer(
    help="matengine: annotations kept in sync with a changing segmentation, "
    "published as exact, time-frozen versions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain click help: typer's rich help pulls in markdown and syntax highlighting (~0.3 s)
    rich_markup_mode=None,
)


@app.callback()
def _global(
    database_url: str = typer.Option(
        None, "--database-url", help="PostgreSQL URL (default: the embedded server)."
    ),
    broker_url: str = typer.Option(
        None, "--broker-url", help="Celery broker URL (default: an in-process worker)."
    ),
    result_backend: str = typer.Option(None, "--result-backend", help="Celery result backend."),
    config: Path = typer.Option(None, "--config", help="TOML file declaring datastacks."),
    home: Path = typer.Option(None, "--home", help="Where embedded state lives."),
) -> None:
    from matengine.config import configure

    configure(
        database_url=database_url,
        broker_url=broker_url,
        result_backend=result_backend,
        config=config,
        home=home,
    )


def _register() -> None:
    from matengine.cli import (
        annotations_cmd,
        bench_cmd,
        catalog_cmd,
        db_cmd,
        demo_cmd,
        ops_cmd,
        workflow_cmd,
    )

    app.add_typer(db_cmd.app, name="db")
    app.add_typer(catalog_cmd.datastack_app, name="datastack")
    app.add_typer(catalog_cmd.table_app, name="table")
    app.add_typer(annotations_cmd.app, name="annotations")
    app.command("demo")(demo_cmd.demo)
    app.command("upload")(workflow_cmd.upload)
    app.command("ingest")(workflow_cmd.ingest)
    app.command("update-roots")(workflow_cmd.update_roots)
    app.command("materialize")(workflow_cmd.materialize)
    app.command("complete")(workflow_cmd.complete)
    app.command("export")(workflow_cmd.export)
    app.command("runs")(workflow_cmd.runs_list)
    app.add_typer(ops_cmd.versions_app, name="versions")
    app.command("remove-expired")(ops_cmd.remove_expired)
    app.command("schedule")(ops_cmd.schedule)
    app.command("worker")(ops_cmd.worker)
    app.command("beat")(ops_cmd.beat)
    app.command("doctor")(ops_cmd.doctor)
    app.command("cancel")(workflow_cmd.runs_cancel)
    app.command("resume")(workflow_cmd.runs_resume)
    app.command("bench")(bench_cmd.bench)
    from matengine.cli import query_cmd, serve_cmd, token_cmd

    app.command("serve")(serve_cmd.serve)
    app.command("query")(query_cmd.query)
    app.add_typer(token_cmd.app, name="token")
    from matengine.cli import graph_cmd

    app.add_typer(graph_cmd.app, name="graph")
    from matengine.cli import view_cmd

    app.add_typer(view_cmd.app, name="view")
    from matengine.cli import aggregate_cmd

    app.add_typer(aggregate_cmd.app, name="aggregate")
    from matengine.cli.synth_cmd import synth

    app.command("synth")(synth)


_register()


def main() -> None:
    try:
        app()
    except MatengineError as exc:
        from rich.markup import escape

        from matengine.cli.flags import as_cli_message
        from matengine.cli.output import err_console

        err_console.print(f"[red]error:[/red] {escape(as_cli_message(str(exc)))}", highlight=False)
        sys.exit(1)
