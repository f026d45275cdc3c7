"""``matengine bench``: run the benchmarks of docs/design.md §8 beside their baselines, print one table.

The benchmarks live in the repository's ``bench/`` folder (not in the installed package): this
command finds it next to the ``matengine`` package of a source checkout (an editable install),
or where ``--bench-dir`` says.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from matengine.cli.output import err_console

BENCHMARKS = ("upload", "sync", "materialize", "query", "export", "aggregates", "versions", "writeback")


def find_bench_dir(given: Path | None = None) -> Path:
    """The ``bench/`` folder holding ``report.py``: ``given``, else the checkout's."""
    # this file is matengine/cli/bench_cmd.py: the checkout is three levels up
    candidates = [given] if given else [Path(__file__).resolve().parents[2] / "bench"]
    for path in candidates:
        if path is not None and (path / "report.py").is_file() and (path / "__init__.py").is_file():
            return path.resolve()
    where = given or candidates[0]
    raise typer.BadParameter(
        f"no benchmarks at {where}: `matengine bench` runs from a source checkout of matengine "
        "(pip install -e .), or pass --bench-dir PATH/TO/bench"
    )


def load_report(bench_dir: Path):
    """Import ``bench.report`` from ``bench_dir`` (its parent goes on ``sys.path``)."""
    root = str(bench_dir.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("bench.report")


def _names(only: list[str] | None) -> list[str] | None:
    if not only:
        return None
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise typer.BadParameter(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
            param_hint="--only",
        )
    return names


def bench(
    rows: str = typer.Option("1M", "--rows", help="Rows per benchmark: 20k, 1M, 10M or a number."),
    only: list[str] = typer.Option(
        None,
        "--only",
        help="Run only these benchmarks (repeat or comma-separate): " + ", ".join(BENCHMARKS) + ".",
    ),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON here."),
    workdir: Path = typer.Option(
        None, "--workdir", help="Where synthetic datasets are written (default: a temp dir)."
    ),
    bench_dir: Path = typer.Option(
        None, "--bench-dir", help="The repository's bench/ folder (default: found)."
    ),
) -> None:
    """Benchmark bulk upload, ingest, update-roots, materialize (and queries) against their
    baselines, each measured in the same run on the same data, and print one table:
    operation, ours, baseline, ratio, target, met?. Scratch databases are created on the
    configured PostgreSQL server (or $MATENGINE_BENCH_ADMIN_URL) and dropped afterwards."""
    report_mod = load_report(find_bench_dir(bench_dir))
    try:
        n = report_mod.parse_rows(rows)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rows") from None
    report = report_mod.run_all(
        n,
        _names(only),
        json_out=json_out,
        workdir=workdir,
        log=lambda msg: err_console.print(f"[dim]{msg}[/dim]"),
    )
    typer.echo(report_mod.format_table(report["table"]))
    typer.echo(
        f"{len(report['table'])} results in {report['seconds']} s"
        + (f"; JSON written to {json_out}" if json_out else "")
    )
    for name, error in report["errors"].items():
        err_console.print(f"[red]{name} failed:[/red] {error}")
    if report["errors"]:
        raise typer.Exit(1)
