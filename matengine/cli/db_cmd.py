"""``matengine db status|start|stop``: the database in use, and the embedded server."""

from __future__ import annotations

import time

import typer

from matengine.cli.output import emit, print_fields

app = typer.Typer(
    help="The PostgreSQL server in use (embedded by default).", no_args_is_help=True, rich_markup_mode=None
)


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Which database is in use and whether the embedded server runs."""
    from matengine.config import get_settings
    from matengine.db import embedded

    settings = get_settings()
    if settings.database_url:
        data = {"mode": "external", "running": True, "url": settings.database_url}
    else:
        st = embedded.status(settings.home)
        data = {"mode": "embedded", "running": st.running, "url": st.url, "pgdata": st.pgdata, "pid": st.pid}
        if st.running and st.url:
            data["settings"] = embedded.settings_in_use(st.url)
    emit(data, json_out, lambda: print_fields(data))


@app.command()
def start(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Start the embedded server (no-op with --database-url) and migrate the schema."""
    from matengine.config import get_settings
    from matengine.db.connection import get_engine, resolve_database_url

    settings = get_settings()
    t0 = time.perf_counter()
    url = resolve_database_url(settings)
    get_engine(url)
    data = {
        "mode": "external" if settings.database_url else "embedded",
        "url": url,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    emit(data, json_out, lambda: print_fields(data))


@app.command()
def stop(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Stop the embedded server."""
    from matengine.config import get_settings
    from matengine.db import embedded

    settings = get_settings()
    if settings.database_url:
        data = {"stopped": False, "reason": "an external database is configured"}
    else:
        data = {"stopped": embedded.stop(settings.home)}
    emit(data, json_out, lambda: print_fields(data))
