"""``matengine synth``: write a synthetic dataset (volume, edit-log graph, annotation tables)."""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import typer


def _triple(text: str, what: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0:
        raise typer.BadParameter(f"{what} must be three positive integers like 160,128,48")
    return (parts[0], parts[1], parts[2])


def synth(
    directory: Path = typer.Argument(..., help="Where to write the dataset (created if needed)."),
    size: str = typer.Option("160,128,48", "--size", help="Volume size in voxels, X,Y,Z."),
    supervoxels: int = typer.Option(
        600, "--supervoxels", min=1, help="Number of supervoxels in the volume (exact)."
    ),
    edits: int = typer.Option(60, "--edits", min=0, help="Merge/split edits in the log."),
    synapses: int = typer.Option(2000, "--synapses", min=0, help="Rows of the synapses table."),
    cells: int = typer.Option(100, "--cells", min=0, help="Rows of the cells table."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same dataset)."),
    span_days: float = typer.Option(
        30.0, "--span-days", min=0.001, help="Edits are spread over this many days."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the dataset description as JSON."),
) -> None:
    """Generate a synthetic dataset: a precomputed supervoxel volume, a local:// edit-log
    graph, and synapse/cell annotation tables as .npy columns (bulk-upload layout), plus
    dataset.json. The oracle (matengine.synth.oracle) answers "which rows, supervoxels
    and roots at time T" from these files alone."""
    from matengine.synth.generate import generate_dataset, info_as_json

    started = time.perf_counter()
    try:
        info = generate_dataset(
            directory,
            size=_triple(size, "--size"),
            supervoxels=supervoxels,
            edits=edits,
            synapses=synapses,
            cells=cells,
            seed=seed,
            span=timedelta(days=span_days),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    data = info_as_json(info)
    data["seconds"] = round(time.perf_counter() - started, 3)
    data["upload_flags"] = {
        "created": info.start.isoformat(),
        "roots_timestamp": info.initial_timestamp.isoformat(),
    }
    if json_out:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    typer.echo(f"dataset written to {info.directory} in {data['seconds']} s")
    typer.echo(f"  segmentation source: {info.graph_url}")
    typer.echo(f"  flat source:         {info.precomputed_url}")
    typer.echo(
        f"  supervoxels {info.supervoxels}, edits {info.edits} "
        f"({info.start.isoformat()} .. {info.end.isoformat()})"
    )
    for name, folder in info.tables.items():
        typer.echo(f"  table {name}: {folder}")
    # the rows exist from the dataset's start, and its root ids are valid at initial_timestamp:
    # an upload without these flags stamps rows "now", and versions before now hold none
    typer.echo(
        f"  upload with: --created {info.start.isoformat()} "
        f"--roots-timestamp {info.initial_timestamp.isoformat()}"
    )
