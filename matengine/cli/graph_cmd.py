"""``matengine graph merge|split|log``: proofread a built-in ``local://`` graph.

``GRAPH`` is a datastack name (its segmentation source must be ``local://``) or a
``local://PATH`` URL. Edits go through the same code as the API's ``merge``/``split``
routes (:mod:`matengine.segmentation.local_edits`), so a running server sees them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from matengine.cli.output import console, emit, print_table
from matengine.errors import InvalidInput, MatengineError
from matengine.segmentation.timecodes import from_us

if TYPE_CHECKING:  # the edit stack (numpy, the local graph) loads only for an edit
    from matengine.segmentation.local_edits import EditResult, Merge, Split

app = typer.Typer(help="Proofread a built-in local:// graph (merge, split, edit log).", no_args_is_help=True)


def _directory(graph: str) -> Path:
    url = graph
    if not graph.startswith("local://"):
        from matengine import catalog
        from matengine.db.connection import get_engine

        url = catalog.get_datastack(get_engine(), graph).segmentation_source
        if not url.startswith("local://"):
            raise MatengineError(f"datastack {graph!r} does not use a local:// graph (it uses {url})")
    path = Path(url[len("local://") :])
    if not (path / "graph.json").is_file():
        raise MatengineError(f"{url}: not an edit-log graph directory")
    return path


def _ids(value: str, what: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated integers") from None
    if not ids:
        raise typer.BadParameter(f"{what}: at least one id")
    return ids


def _apply(graph: str, change: Merge | Split) -> EditResult:
    from matengine.segmentation.local_edits import EditRefused, apply_edit

    try:
        return apply_edit(_directory(graph), change)
    except EditRefused as exc:
        raise MatengineError(str(exc)) from exc


def _show(result: EditResult, json_out: bool) -> None:
    data = {
        "operation_id": result.operation_id,
        "timestamp": result.timestamp,
        "kind": result.kind,
        "old_root_ids": list(result.old_root_ids),
        "new_root_ids": list(result.new_root_ids),
    }
    emit(
        data,
        json_out,
        lambda: console.print(
            f"{result.kind} {result.operation_id} at {result.timestamp.isoformat()}: "
            f"{', '.join(map(str, result.old_root_ids))} -> {', '.join(map(str, result.new_root_ids))}"
        ),
    )


@app.command("merge")
def merge(
    graph: str = typer.Argument(..., help="Datastack name or local://PATH."),
    supervoxel_a: int = typer.Argument(..., help="A supervoxel of the first root."),
    supervoxel_b: int = typer.Argument(..., help="A supervoxel of the second root."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Merge the roots of two supervoxels (now, at the server's clock)."""
    from matengine.segmentation.local_edits import Merge

    _show(_apply(graph, Merge(supervoxel_a, supervoxel_b)), json_out)


@app.command("split")
def split(
    graph: str = typer.Argument(..., help="Datastack name or local://PATH."),
    source: str = typer.Option(..., help="Supervoxels that leave the root (comma-separated)."),
    sink: str = typer.Option(..., help="Supervoxels that stay (comma-separated, at least one)."),
    root: int = typer.Option(None, help="Refuse unless the supervoxels belong to this root now."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Split a root: the sources get a new root, the rest of the root another."""
    from matengine.segmentation.local_edits import Split

    _show(_apply(graph, Split(_ids(source, "--source"), _ids(sink, "--sink"), root)), json_out)


@app.command("log")
def log(
    graph: str = typer.Argument(..., help="Datastack name or local://PATH."),
    root: int = typer.Option(None, help="Only the change log of this root (its past edits)."),
    last: int = typer.Option(20, min=1, help="Show the last N edits (without --root)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The edit log: the last edits, or one root's change log."""
    from matengine.segmentation.local_graph import LocalGraph
    from matengine.segmentation.local_history import BadHistoryRequest, tabular_change_log

    g = LocalGraph(_directory(graph))
    if root is not None:
        try:
            df = tabular_change_log(g, root, filtered=False)
        except BadHistoryRequest as exc:
            raise InvalidInput(str(exc)) from exc
        rows = [
            {
                "operation_id": int(r.operation_id),
                "timestamp": r.timestamp.isoformat(),
                "kind": "merge" if r.is_merge else "split",
                "user_id": r.user_id,
                "before_root_ids": [int(v) for v in r.before_root_ids],
                "after_root_ids": [int(v) for v in r.after_root_ids],
            }
            for r in df.itertuples()
        ]
    else:
        e = g.files.edits
        assert e.user_id is not None
        rows = []
        for i in range(max(0, len(e) - last), len(e)):
            merge_ = e.kind[i] == 0
            new = [int(e.new_root_a[i])] + ([] if merge_ else [int(e.new_root_b[i])])
            rows.append(
                {
                    "operation_id": int(e.operation_id[i]),
                    "timestamp": from_us(int(e.timestamp_us[i])).isoformat(),
                    "kind": "merge" if merge_ else "split",
                    "user_id": str(int(e.user_id[i])),
                    "supervoxels": [int(e.sv_a[i]), int(e.sv_b[i])],
                    "new_root_ids": new,
                    "moved": int(len(e.split_set(i))),
                }
            )
    columns = list(rows[0]) if rows else ["operation_id", "timestamp", "kind"]
    emit(rows, json_out, lambda: print_table(rows, columns))
