"""``matengine datastack …`` and ``matengine table …``."""

from __future__ import annotations

import typer

from matengine.cli.output import console, emit, print_table

datastack_app = typer.Typer(
    help="Datastacks: annotation database + segmentation.", no_args_is_help=True, rich_markup_mode=None
)
table_app = typer.Typer(help="Annotation tables of a datastack.", no_args_is_help=True, rich_markup_mode=None)


def parse_resolution(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected X,Y,Z numbers, got {value!r}") from None
    if len(parts) != 3:
        raise typer.BadParameter(f"expected X,Y,Z, got {value!r}")
    return parts


@datastack_app.command("add")
def datastack_add(
    name: str,
    segmentation_source: str = typer.Option(..., help="graphene://…, local://… or precomputed://…"),
    voxel_resolution: str = typer.Option(..., help="Default annotation resolution X,Y,Z (nm)."),
    aligned_volume: str = typer.Option(None, help="Aligned volume name (default: NAME)."),
    description: str = typer.Option("", help="Free text."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Declare a datastack."""
    from matengine import catalog
    from matengine.db.connection import get_engine

    ds = catalog.add_datastack(
        get_engine(),
        name,
        segmentation_source=segmentation_source,
        voxel_resolution=parse_resolution(voxel_resolution),
        aligned_volume=aligned_volume,
        description=description,
    )
    emit(ds.to_dict(), json_out, lambda: console.print(f"added datastack {ds.name}"))


@datastack_app.command("set-info")
def datastack_set_info(
    name: str,
    image_source: str = typer.Option(
        None, "--image-source", help="Image layer for Neuroglancer (precomputed://…)."
    ),
    viewer_site: str = typer.Option(None, "--viewer-site", help="Neuroglancer deployment (https://…)."),
    skeleton_source: str = typer.Option(None, "--skeleton-source", help="Skeleton service or layer URL."),
    synapse_table: str = typer.Option(None, "--synapse-table", help="The datastack's synapse table."),
    soma_table: str = typer.Option(None, "--soma-table", help="The datastack's soma (nucleus) table."),
    description: str = typer.Option(None, "--description", help="Free text."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set what the info service tells caveclient and Neuroglancer (\"\" clears a field)."""
    from matengine import catalog
    from matengine.db.connection import get_engine

    ds = catalog.set_datastack_info(
        get_engine(),
        name,
        description=description,
        image_source=image_source,
        viewer_site=viewer_site,
        skeleton_source=skeleton_source,
        synapse_table=synapse_table,
        soma_table=soma_table,
    )
    emit(ds.to_dict(), json_out, lambda: console.print(f"{name}: {ds.info}"))


@datastack_app.command("list")
def datastack_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List datastacks."""
    from matengine import catalog
    from matengine.db.connection import get_engine

    rows = [d.to_dict() for d in catalog.list_datastacks(get_engine())]
    emit(
        rows,
        json_out,
        lambda: print_table(rows, ["name", "aligned_volume", "segmentation_source", "voxel_resolution"]),
    )


@table_app.command("create")
def table_create(
    datastack: str,
    table: str,
    schema: str = typer.Option(..., help="Annotation schema, e.g. synapse."),
    voxel_resolution: str = typer.Option(None, help="X,Y,Z (default: the datastack's)."),
    description: str = typer.Option("", help="Free text."),
    reference_table: str = typer.Option(None, help="Target table of a reference schema."),
    read_permission: str = typer.Option("PUBLIC", "--read-permission", help="PRIVATE, GROUP or PUBLIC."),
    write_permission: str = typer.Option("PUBLIC", "--write-permission", help="PRIVATE, GROUP or PUBLIC."),
    owner: str = typer.Option(
        "matengine", "--owner", help="User who owns the table (PRIVATE/GROUP refer to them)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an annotation table (and its segmentation table) from a schema."""
    from matengine import catalog
    from matengine.db.connection import get_engine

    t = catalog.create_table(
        get_engine(),
        datastack,
        table,
        schema=schema,
        voxel_resolution=parse_resolution(voxel_resolution),
        description=description,
        reference_table=reference_table,
        owner=owner,
        read_permission=read_permission,
        write_permission=write_permission,
    )
    emit(t.to_dict(), json_out, lambda: console.print(f"created table {datastack}.{table}"))


@table_app.command("list")
def table_list(datastack: str, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the annotation tables of a datastack with row counts."""
    from matengine import catalog
    from matengine.db.connection import get_engine
    from matengine.stats import table_row_counts

    engine = get_engine()
    tables = catalog.list_tables(engine, datastack)
    counts = table_row_counts(engine, tables)
    rows = [dict(t.to_dict(), live_rows=counts[t.table_name]) for t in tables]
    emit(
        rows,
        json_out,
        lambda: print_table(
            rows, ["table_name", "schema_type", "live_rows", "roots_last_updated", "description"]
        ),
    )
