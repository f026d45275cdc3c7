"""``matengine serve``: the REST API under uvicorn."""

from __future__ import annotations

import logging

import typer

from matengine.cli.output import err_console


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", help="Port to bind."),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Answer without tokens (every caller is admin). Only with a loopback --host."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the caveclient-compatible REST API (OpenAPI at /docs)."""
    import uvicorn

    from matengine.api.app import create_app
    from matengine.auth import is_loopback

    if no_auth and not is_loopback(host):
        err_console.print(f"[red]error:[/red] --no-auth needs a loopback --host, not {host!r}")
        raise typer.Exit(2)
    if no_auth:
        err_console.print(
            f"[yellow]warning:[/yellow] auth is OFF: every local caller is admin; serving on {host} only"
        )
    logging.basicConfig(level=log_level.upper())
    app = create_app(auth_enabled=not no_auth)
    # one process: run more behind a load balancer (state lives in PostgreSQL, not here)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=True)
