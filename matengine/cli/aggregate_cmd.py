"""``matengine aggregate root-counts|partners``: per-root synapse aggregates
(:mod:`matengine.query.aggregates`) at a version or at any timestamp."""

from __future__ import annotations

import typer

from matengine.cli.output import emit, print_table

app = typer.Typer(help="Per-root aggregates of a synapse-like table.", no_args_is_help=True)


@app.command("root-counts")
def root_counts_cmd(
    datastack: str,
    table: str,
    version: int = typer.Option(None, help="At this version."),
    timestamp: str = typer.Option(None, help="At this time (ISO); exact by the time rule."),
    side: str = typer.Option("pre", help="pre (outgoing synapses) or post (incoming)."),
    top: int = typer.Option(20, help="The N roots with the most synapses."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Synapses per root, largest first."""
    from matengine.query.aggregates import root_counts

    got = root_counts(_engine(), datastack, table, version=version, timestamp=timestamp, side=side, top=top)
    rows = [{"root_id": r, "count": n} for r, n in zip(got.root_id.tolist(), got.count.tolist(), strict=True)]
    emit(got.to_dict(), json_out, lambda: print_table(rows, ["root_id", "count"]))


@app.command("partners")
def partners_cmd(
    datastack: str,
    table: str,
    root: str = typer.Option(..., help="Root ids (comma-separated)."),
    version: int = typer.Option(None, help="At this version."),
    timestamp: str = typer.Option(None, help="At this time (ISO); exact by the time rule."),
    direction: str = typer.Option("out", help="out (their outputs) or in (their inputs)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The partner table of roots: (pre root, post root, synapses), heaviest first."""
    from matengine.query.aggregates import partners

    try:
        roots = [int(r) for r in root.split(",") if r.strip()]
    except ValueError:
        raise typer.BadParameter("--root: comma-separated integers") from None
    got = partners(
        _engine(), datastack, table, roots, version=version, timestamp=timestamp, direction=direction
    )
    d = got.to_dict()
    rows = [dict(zip(d, values, strict=True)) for values in zip(*d.values(), strict=True)]
    emit(d, json_out, lambda: print_table(rows, list(d)))


def _engine():  # imported on use: ``matengine --help`` must not load the database stack
    from matengine.db.connection import get_engine

    return get_engine()
