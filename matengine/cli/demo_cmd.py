"""``matengine demo``: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer

from matengine.cli.output import console, emit, print_table


def demo(
    size: str = typer.Option(
        "small", help="small (5k synapses) | medium (200k) | large (1M), or a synapse count."
    ),
    workdir: Path = typer.Option(
        None, help="Where the synthetic dataset goes (default: MATENGINE_HOME/demo)."
    ),
    seed: int = typer.Option(0, help="Seed of the synthetic dataset."),
    serve: bool = typer.Option(
        False, "--serve", help="Afterwards keep the API and dashboard up on loopback (no auth) until Ctrl-C."
    ),
    port: int = typer.Option(8000, help="Port for --serve."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the whole product once: synthetic data, upload, workflows, versions, oracle check."""
    from matengine.demo import run_demo

    summary = run_demo(size=size, workdir=workdir, seed=seed, log=None if json_out else console.print)
    emit(summary, json_out, lambda: _human(summary))
    if not summary["verified"]:
        raise typer.Exit(1)
    if serve:
        from matengine.cli.serve_cmd import serve as serve_api

        console.print(f"API and dashboard: http://127.0.0.1:{port}/ (OpenAPI at /docs)")
        serve_api(host="127.0.0.1", port=port, no_auth=True, log_level="warning")


def _human(summary: dict) -> None:
    rows = [{"step": k, "seconds": v} for k, v in summary["timings_s"].items()]
    print_table(rows, ["step", "seconds"], title="demo timings")
    print_table(
        [{"table": k, "rows": v} for k, v in summary["rows"].items()],
        ["table", "rows"],
        title=f"versions {summary['versions']}",
    )
    console.print(
        f"database: {summary['database']}, workers: {summary['workers']}, {summary['seconds']} s in all"
    )
    console.print(f"verified against oracle: {'yes' if summary['verified'] else 'no'}")
