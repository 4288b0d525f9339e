"""`openeas group list|desc|modify`: service groups (services that name one in metadata.group).

    openeas group list
    openeas group desc G
    openeas group modify G -D traffic_mode=customized -D weights.svc_a=90 -D weights.svc_b=10
    openeas group modify G -D token=null        # a new generated group token

`/api/predict/<G>` splits requests across the members by weight (`auto`: by ready instances,
`customized`: the weights set here; 0 or -1: no group traffic); `/api/predict/<G>.<service>`
reaches one member. See docs/traffic.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from openeas.cli.client import ApiClient
from openeas.cli.output import (
    Assignments,
    DataDir,
    JsonOut,
    PatchFile,
    client_for,
    emit_json,
    pairs,
    print_table,
    read_patch,
    user_errors,
)

group_app = typer.Typer(
    help="Service groups: list, desc, modify (traffic mode, member weights, token).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="group name", show_default=False)]


def group_path(client: ApiClient, name: str) -> str:
    return f"/api/v2/groups/{client.region}/{name}"


def show_group(view: dict[str, Any]) -> None:
    endpoints = view.get("endpoints") or {}
    rows: list[tuple[str, Any]] = [
        ("Name", view["name"]),
        ("Traffic mode", view["traffic_mode"]),
        ("Internet endpoint", endpoints.get("internet") or "-"),
        ("VPC endpoint", endpoints.get("vpc") or "-"),
        ("Token", view["token"]),
        ("Gateways", ", ".join(view.get("gateways") or []) or "-"),
    ]
    pairs(rows)
    table = Table(box=None, header_style="bold")
    for col in ("MEMBER", "STATUS", "READY", "WEIGHT", "EFFECTIVE", "SHARE", "MEMBER PATH"):
        table.add_column(col, overflow="fold")
    for m in view.get("members") or []:
        weight = m.get("weight")
        table.add_row(
            m["name"],
            m.get("status", ""),
            str(m.get("ready_instances", 0)),
            "-" if weight is None else str(weight),
            str(m.get("effective_weight", 0)),
            f"{m.get('share', 0.0):g}%",
            f"{view['name']}.{m['name']}",
        )
    print_table(table)


@group_app.command("list")
def list_groups(json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """List the service groups with their members and traffic shares."""
    with user_errors(json_out), client_for(data_dir) as client:
        groups: list[dict[str, Any]] = client.request("GET", "/api/v2/groups")["groups"]
    if json_out:
        emit_json(groups)
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "MODE", "MEMBERS", "INTERNET ENDPOINT"):
        table.add_column(col, overflow="fold")
    for g in groups:
        members = ", ".join(f"{m['name']} {m.get('share', 0.0):g}%" for m in g.get("members") or [])
        table.add_row(
            g["name"], g["traffic_mode"], members, (g.get("endpoints") or {}).get("internet") or "-"
        )
    print_table(table)


@group_app.command("desc")
def desc(name: Name, json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """Describe a group: endpoints, token, members with weights and ready instances."""
    with user_errors(json_out), client_for(data_dir) as client:
        view: dict[str, Any] = client.request("GET", group_path(client, name))
    if json_out:
        emit_json(view)
    else:
        show_group(view)


@group_app.command("modify")
def modify(
    name: Name,
    spec_file: PatchFile = None,
    define: Assignments = None,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Change a group's traffic mode, member weights or token (gateways apply it within ~100 ms):
    -D traffic_mode=auto|customized, -D weights.<service>=-1..1000, -D token=... (null: a new
    one), or -s with JSON such as {"traffic_mode": "customized", "weights": {"a": 90}}."""
    with user_errors(json_out):
        patch = read_patch(spec_file, define)
        with client_for(data_dir) as client:
            view: dict[str, Any] = client.request("PUT", group_path(client, name), patch.body())
    if json_out:
        emit_json(view)
    else:
        show_group(view)
