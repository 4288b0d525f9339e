"""`openeas keys create|list|revoke`: AccessKeys for EAS's management API (docs/management-api.md).

    openeas keys create [--read-only] [--description TEXT]   prints the id and the secret (once)
    openeas keys list
    openeas keys revoke ID

A key signs requests of the official `alibabacloud-eas20210701` SDK (and any tool that signs
as Alibaba Cloud's SDKs do). A read-only key may call only the Describe*/List* operations.
Keys are managed with the admin token (the CLI reads it from the data dir), never with a key.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from openeas.cli.output import DataDir, JsonOut, client_for, emit_json, pairs, print_table, user_errors

KEYS_PATH = "/api/v2/accesskeys"

keys_app = typer.Typer(
    help="AccessKeys for EAS's management API (the alibabacloud-eas20210701 SDK): create, list, revoke.",
    no_args_is_help=True,
)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@keys_app.command("create")
def create(
    read_only: Annotated[
        bool, typer.Option("--read-only", help="the key may call only Describe*/List* operations")
    ] = False,
    description: Annotated[str, typer.Option("--description", help="what the key is for")] = "",
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Create an AccessKey and print its id and secret: the secret is shown only this once."""
    with user_errors(json_out), client_for(data_dir) as client:
        key: dict[str, Any] = client.request(
            "POST", KEYS_PATH, {"read_only": read_only, "description": description}
        )
    if json_out:
        emit_json(key)
        return
    pairs(
        [
            ("AccessKey ID", key["id"]),
            ("AccessKey secret", key["secret"]),
            ("Access", "read-only (Describe*/List*)" if key["read_only"] else "full"),
        ]
    )
    print("\nThe secret is not shown again: keep it now (for the SDK's Config access_key_secret).")


@keys_app.command("list")
def list_keys(json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """List the AccessKeys (ids, access, creation time; never the secrets)."""
    with user_errors(json_out), client_for(data_dir) as client:
        keys: list[dict[str, Any]] = client.request("GET", KEYS_PATH)["access_keys"]
    if json_out:
        emit_json(keys)
        return
    table = Table(box=None, header_style="bold")
    for col in ("ID", "ACCESS", "CREATED", "DESCRIPTION"):
        table.add_column(col, overflow="fold")
    for k in keys:
        table.add_row(
            k["id"], "read-only" if k["read_only"] else "full", _when(k["created_at"]), k["description"]
        )
    print_table(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the AccessKey id", show_default=False)],
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Revoke an AccessKey: requests signed with it are refused from now on."""
    with user_errors(json_out), client_for(data_dir) as client:
        result: dict[str, Any] = client.request("DELETE", f"{KEYS_PATH}/{key_id}")
    if json_out:
        emit_json(result)
    else:
        print(f"AccessKey {key_id} revoked")
