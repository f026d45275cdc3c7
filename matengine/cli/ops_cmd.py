"""Operator commands: versions, remove-expired, schedules, worker, beat, doctor."""

from __future__ import annotations

import time

import typer
from typer._click.core import Context as ClickContext  # typer vendors its click
from typer.core import TyperGroup

from matengine.cli.output import console, emit, print_table

JSON = typer.Option(False, "--json", help="Print JSON.")


class _ListByDefault(TyperGroup):
    """``matengine versions [DS]`` lists (as it always did); ``matengine versions pin DS N``
    and the other subcommands act: a first word that is no subcommand means ``list``."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


versions_app = typer.Typer(cls=_ListByDefault, help="Versions: list, pin, unpin, export one as a schema.")


@versions_app.command("list")
def versions(
    datastack: str = typer.Argument(None, help="Only this datastack."), json_out: bool = JSON
) -> None:
    """List versions (one past its expiry shows EXPIRED even before it is removed)."""
    from matengine.db.connection import get_engine
    from matengine.versions import list_versions

    rows = [v.to_dict() for v in list_versions(get_engine(), datastack)]
    shown = [dict(r, tables=", ".join(f"{t}:{n}" for t, n in r["tables"].items())) for r in rows]
    emit(
        rows,
        json_out,
        lambda: print_table(
            shown,
            ["datastack", "version", "time_stamp", "status", "expires_on", "pinned", "tables", "rows"],
        ),
    )


def _pin(datastack: str, version: int, pinned: bool, json_out: bool) -> None:
    from matengine.db.connection import get_engine
    from matengine.versions import set_pinned

    v = set_pinned(get_engine(), datastack, version, pinned).to_dict()
    emit(v, json_out, lambda: console.print(f"{datastack} v{version}: {'pinned' if pinned else 'unpinned'}"))


@versions_app.command("pin")
def pin(datastack: str, version: int, json_out: bool = JSON) -> None:
    """Pin a version: it never expires and is never removed (long-term or public versions)."""
    _pin(datastack, version, True, json_out)


@versions_app.command("unpin")
def unpin(datastack: str, version: int, json_out: bool = JSON) -> None:
    """Unpin a version: its expiry applies again (counted from when it was built)."""
    _pin(datastack, version, False, json_out)


@versions_app.command("export-schema")
def export_schema(
    datastack: str,
    version: int,
    schema: str = typer.Option(None, "--schema", help="Target schema (default <ds>__export<N>)."),
    json_out: bool = JSON,
) -> None:
    """Copy one version into a schema of plain, indexed tables (for pg_dump --schema)."""
    from matengine.db.connection import get_engine
    from matengine.versions import export_version

    target, tables = export_version(get_engine(), datastack, version, schema)
    emit(
        {"schema": target, "tables": tables},
        json_out,
        lambda: console.print(f"wrote {', '.join(tables)} into schema {target}: pg_dump --schema={target}"),
    )


def remove_expired(
    datastack: str = typer.Argument(None, help="Only this datastack."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would go."),
    keep: int = typer.Option(None, help="Valid versions always kept (default from settings)."),
    json_out: bool = JSON,
) -> None:
    """Drop versions past their expiry (never the latest valid ones)."""
    from matengine.db.connection import get_engine
    from matengine.versions import remove_expired as remove

    done = [r.__dict__ for r in remove(get_engine(), datastack, dry_run=dry_run, keep=keep)]
    emit(
        {"dry_run": dry_run, "removed": done},
        json_out,
        lambda: print_table(
            done, ["datastack", "version", "reason"], title="would remove" if dry_run else "removed"
        ),
    )


def schedule(
    datastack: str,
    cron: str = typer.Argument(None, help="Crontab 'm h dom mon dow'; omit to clear."),
    live: bool = typer.Option(
        False, "--live", help="Schedule ingest + update-roots (no version) instead of `complete`."
    ),
    json_out: bool = JSON,
) -> None:
    """Set (or clear) a datastack's periodic `complete` schedule (or with --live its
    ingest + update-roots schedule), run by `matengine beat`."""
    from matengine import catalog
    from matengine.db.connection import get_engine
    from matengine.workflows.schedule import parse_schedule

    if cron:
        parse_schedule(cron)
    if live:
        ds = catalog.set_live_schedule(get_engine(), datastack, cron)
        emit(ds.to_dict(), json_out, lambda: console.print(f"{datastack}: live schedule {ds.live_schedule}"))
        return
    ds = catalog.set_schedule(get_engine(), datastack, cron)
    emit(ds.to_dict(), json_out, lambda: console.print(f"{datastack}: schedule {ds.schedule}"))


def _celery_app():
    from matengine.config import get_settings
    from matengine.workflows.celery_app import configure

    settings = get_settings()
    if not settings.broker_url:
        raise typer.BadParameter(
            "no broker configured: set MATENGINE_BROKER_URL or "
            "--broker-url (the embedded default runs workflows in-process)"
        )
    return configure(settings)


def worker(
    concurrency: int = typer.Option(2, help="Worker processes."),
    loglevel: str = typer.Option("INFO", help="Log level."),
    name: str = typer.Option(
        None,
        help="Node name (default: QUEUE.PID@HOST, unique, "
        "so several workers can share a machine and a broker).",
    ),
) -> None:
    """Start a Celery worker for matengine's workflows."""
    import os

    from matengine.config import get_settings

    queue = get_settings().queue
    node = name or f"{queue}.{os.getpid()}@%h"
    _celery_app().worker_main(
        ["worker", f"--loglevel={loglevel}", "-Q", queue, "-n", node, f"--concurrency={concurrency}", "-E"]
    )


def beat(
    loglevel: str = typer.Option("INFO", help="Log level."),
    schedule_file: str = typer.Option(
        None, help="Where beat keeps its state (default: MATENGINE_HOME/celerybeat-schedule)."
    ),
) -> None:
    """Start celery beat: periodic materialization and version removal."""
    from matengine.config import get_settings

    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    path = schedule_file or str(home / "celerybeat-schedule")
    _celery_app().start(["beat", f"--loglevel={loglevel}", f"--schedule={path}"])


def doctor(json_out: bool = JSON) -> None:
    """Check database, broker, result backend and workers with a small group + chord."""
    from celery import chord, group
    from sqlalchemy import text

    from matengine.config import get_settings
    from matengine.db.connection import get_engine

    settings = get_settings()
    report: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            report["database"] = "ok: " + conn.execute(text("SELECT version()")).scalar_one()[:40]
    except Exception as exc:
        report["database"] = f"FAILED: {exc}"
    if not settings.broker_url:
        report["broker"] = "none configured: workflows run on an in-process worker"
    else:
        from matengine.workflows.broker import client
        from matengine.workflows.submit import workers_online

        app = client(settings)
        ping, total = app.signature("matengine.ping"), app.signature("matengine.sum")
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=2)
            report["broker"] = f"ok: {settings.broker_url}"
        except Exception as exc:
            report["broker"] = f"FAILED: {exc}"
        names = workers_online(settings)
        report["workers"] = f"ok: {', '.join(names)}" if names else "FAILED: no worker online"
        if not settings.result_backend:
            report["result_backend"] = "none configured (workflows do not need one)"
        elif names:
            t0 = time.perf_counter()
            try:
                got = chord(group(ping.clone((i,)) for i in range(10)))(total).get(timeout=30)
                ok = got == sum(range(10))
                report["group+chord"] = (
                    f"ok in {time.perf_counter() - t0:.2f} s" if ok else f"FAILED: got {got}"
                )
                report["result_backend"] = f"ok: {settings.result_backend}"
            except Exception as exc:
                report["group+chord"] = f"FAILED: {exc}"
    emit(
        report,
        json_out,
        lambda: print_table([{"check": k, "result": v} for k, v in report.items()], ["check", "result"]),
    )
    if any(v.startswith("FAILED") for v in report.values()):
        raise typer.Exit(1)
