"""``matengine demo``: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer

from matengine.cli.output import console, emit


def demo(
    size: str = typer.Option("small", help="small | medium | large, or a synapse count."),
    workdir: Path = typer.Option(None, help="Where the synthetic dataset goes "
                                 "(default: MATENGINE_HOME/demo)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the whole product once: synthetic data, upload, workflows, versions, oracle check."""
    from matengine.demo import run_demo

    summary = run_demo(size=size, workdir=workdir, log=None if json_out else console.print)
    emit(summary, json_out, lambda: console.print(summary))
    if not summary.get("verified"):
        raise typer.Exit(1)
