"""``matengine token create|list|revoke``: bearer tokens for the REST API.

A token is printed once, at creation; only its sha256 is stored.
"""

from __future__ import annotations

import typer

from matengine.cli.output import console, emit, print_table

app = typer.Typer(
    help="API tokens with per-datastack view/edit/admin permissions.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command()
def create(
    datastack: str = typer.Option(..., "--datastack", help="Datastack name, or * for all."),
    permission: str = typer.Option(..., "--permission", help="view, edit or admin."),
    description: str = typer.Option("", "--description", help="Who or what it is for."),
    expires_in: str | None = typer.Option(
        None, "--expires-in", help="Lifetime, e.g. 90d, 12h, 30m or 3600s (default: never expires)."
    ),
    user: str | None = typer.Option(
        None, "--user", help="The user the token speaks for (created if new): owner of the tables it creates."
    ),
    group: list[str] = typer.Option(
        [], "--group", help="Add the user to this group (repeatable); GROUP table permissions use them."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a token and print it (it is not shown again)."""
    from matengine import auth
    from matengine.db.connection import get_engine

    lifetime = auth.parse_duration(expires_in) if expires_in is not None else None
    token_id, token = auth.create_token(
        get_engine(), datastack, permission, description, expires_in=lifetime, user=user, groups=group
    )
    expires = next((r["expires"] for r in auth.list_tokens(get_engine()) if r["id"] == token_id), None)
    emit(
        {
            "id": token_id,
            "token": token,
            "datastack": datastack,
            "permission": permission,
            "expires": expires,
            "user": user,
            "groups": sorted(set(group)),
        },
        json_out,
        lambda: console.print(token, highlight=False, soft_wrap=True),
    )


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Include revoked tokens."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List tokens (ids and grants, never the tokens themselves)."""
    from matengine import auth
    from matengine.db.connection import get_engine

    rows = auth.list_tokens(get_engine(), include_revoked=all_)
    emit(
        rows,
        json_out,
        lambda: print_table(
            rows,
            ["id", "datastack", "permission", "user", "description", "created", "expires", "revoked"],
            title="tokens",
        ),
    )


@app.command()
def revoke(
    token_id: int = typer.Argument(..., help="Id shown by 'token list'."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revoke a token: it is refused from the next request on."""
    from matengine import auth
    from matengine.db.connection import get_engine

    auth.revoke_token(get_engine(), token_id)
    emit({"revoked": token_id}, json_out, lambda: console.print(f"revoked token {token_id}"))
