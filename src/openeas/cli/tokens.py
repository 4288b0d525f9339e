"""`openeas token show|rotate|revoke`: rotate a service's (or a group's) token without a gap.

    openeas token rotate NAME            # prints the new token; the old one keeps working
    openeas token revoke NAME --old      # once callers use the new one: the old one stops
    openeas token show NAME              # the current token, and the old one while it is kept
    (--group: NAME is a service group, not a service)

Both tokens open the service until the old one is revoked; the gateways pick each change up
on their next snapshot (~100 ms), with no instance or gateway restart. See docs/operations.md.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from openeas.cli.client import ApiClient, CliError
from openeas.cli.output import DataDir, JsonOut, client_for, emit_json, pairs, user_errors

token_app = typer.Typer(
    help="Token rotation: a second token while callers move over (rotate, revoke --old, show).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="service name (a group's with --group)", show_default=False)]
Group = Annotated[bool, typer.Option("--group", help="NAME is a service group")]
Old = Annotated[bool, typer.Option("--old", help="revoke the old token (the one rotate replaced)")]


def token_path(client: ApiClient, name: str, group: bool) -> str:
    return f"/api/v2/tokens/{client.region}/{'group' if group else 'service'}/{name}"


def show(view: dict[str, Any]) -> None:
    pairs([
        ("Name", f"{view['name']} ({view['kind']})"),
        ("Token", view["token"]),
        ("Old token", view.get("old_token") or "- (none)"),
    ])


@token_app.command("rotate")
def rotate(name: Name, group: Group = False, json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """Make a new token current and print it; the old one keeps working until revoked."""
    with user_errors(json_out), client_for(data_dir) as client:
        view: dict[str, Any] = client.request("POST", token_path(client, name, group) + "/rotate")
    if json_out:
        emit_json(view)
        return
    sys.stdout.write(view["token"] + "\n")
    sys.stderr.write(
        f"the old token still works; once callers use the new one: openeas token revoke {name} --old"
        + (" --group" if group else "") + "\n"
    )


@token_app.command("revoke")
def revoke(
    name: Name, old: Old = False, group: Group = False, json_out: JsonOut = False, data_dir: DataDir = None
) -> None:
    """Revoke the old token (--old): from now on only the current token opens NAME."""
    with user_errors(json_out):
        if not old:
            raise CliError("say which token to revoke: --old (the current one is replaced with `rotate`)")
        with client_for(data_dir) as client:
            view: dict[str, Any] = client.request("DELETE", token_path(client, name, group) + "/old")
    if json_out:
        emit_json(view)
    else:
        show(view)


@token_app.command("show")
def show_tokens(
    name: Name, group: Group = False, json_out: JsonOut = False, data_dir: DataDir = None
) -> None:
    """The current token, and the old one while a rotation keeps it."""
    with user_errors(json_out), client_for(data_dir) as client:
        view: dict[str, Any] = client.request("GET", token_path(client, name, group))
    if json_out:
        emit_json(view)
    else:
        show(view)
