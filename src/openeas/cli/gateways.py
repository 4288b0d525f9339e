"""`openeas gateway create|list|desc|modify|delete`: dedicated gateways (and a look at the shared one);
`openeas gateway run`: one replica of a gateway on this machine (several machines, docs/distributed.md).

A gateway spec is JSON (docs/gateways.md):

    {"name": "gw1", "enable_internet": true, "listen": {"internet": "0.0.0.0:9000",
     "intranet": "10.0.0.5:9001"}, "internet_acl": [{"entry": "203.0.113.0/24"}],
     "max_body_bytes": 8388608, "rate_limit": 500}

Relative `tls.cert` / `tls.key` paths are made absolute against the current directory before the
spec is sent: the gateway process reads the files, from wherever the server runs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from openeas.cli.client import ApiClient, CliError
from openeas.cli.output import (
    Assignments,
    DataDir,
    JsonOut,
    Patch,
    PatchFile,
    Timeout,
    Wait,
    client_for,
    emit_json,
    pairs,
    print_table,
    read_json_file,
    read_patch,
    user_errors,
)
from openeas.gateway import STORE_URL_ENV

gateway_app = typer.Typer(
    help="Dedicated gateways: create, list, desc, modify, delete (the shared one is listed too); "
    "run: a replica of a gateway on this machine.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="gateway name", show_default=False)]


def absolute_tls_paths(spec: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of `spec` whose relative `tls.cert` / `tls.key` are absolute against `base`."""
    tls = spec.get("tls")
    if not isinstance(tls, dict):
        return spec
    fixed = dict(tls)
    for key in ("cert", "key"):
        value = fixed.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            fixed[key] = str((base / value).resolve())
    return {**spec, "tls": fixed}


def _acl_text(entries: Any, empty: str) -> str:
    if not isinstance(entries, list) or not entries:
        return empty
    parts = []
    for e in entries:
        if isinstance(e, dict):
            comment = f" ({e['comment']})" if e.get("comment") else ""
            parts.append(f"{e.get('entry')}{comment}")
    return ", ".join(parts)


def show_gateway(view: dict[str, Any]) -> None:
    spec: dict[str, Any] = view.get("spec") or {}
    endpoints = view.get("endpoints") or {}
    tls = spec.get("tls")
    if isinstance(tls, dict):
        domains = tls.get("domains") or []
        tls_text = "on" + (f", domains {', '.join(domains)}" if domains else "")
        tls_text += ", HTTP redirected to HTTPS" if spec.get("ssl_redirect") else ""
    else:
        tls_text = "off"
    rate = spec.get("rate_limit") or 0
    group = spec.get("group_rate_limit") or 0
    rows: list[tuple[str, Any]] = [
        ("Gateway", f"{view['name']} ({view.get('type', 'dedicated')})"),
        ("Status", view["status"]),
        ("Internet endpoint", endpoints.get("internet") or "- (Internet access off)"),
        ("VPC endpoint", endpoints.get("intranet") or "- (VPC access off)"),
        ("Internet allow-list", _acl_text(spec.get("internet_acl"), "nobody")),
        ("VPC allow-list", _acl_text(spec.get("intranet_acl"), "any VPC caller")),
        ("Trusted proxies", _acl_text(spec.get("trusted_proxies"), "none (X-Forwarded-For ignored)")),
        ("Max request body", f"{spec.get('max_body_bytes', 1048576)} bytes"),
        (
            "Rate limit",
            (f"{rate} QPS per service" if rate else "none") + (f", {group} QPS per group" if group else ""),
        ),
        ("TLS", tls_text),
        ("Processes", f"{spec.get('workers', 1)} worker(s) x {spec.get('replicas', 1)} replica(s)"),
        ("PIDs", ", ".join(str(p) for p in view.get("pids") or []) or "-"),
        ("Services", ", ".join(view.get("services") or []) or "none"),
    ]
    if view.get("message"):
        rows.insert(2, ("Message", view["message"]))
    pairs(rows)


def _emit(view: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(view)
    else:
        show_gateway(view)


def _wait(client: ApiClient, view: dict[str, Any], wait: bool, timeout: float) -> dict[str, Any]:
    return client.wait_gateway_running(view["name"], timeout) if wait else view


@gateway_app.command("create")
def create(
    spec_file: Annotated[Path, typer.Argument(help="the gateway spec (JSON)", show_default=False)],
    wait: Wait = False,
    timeout: Timeout = 60,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Create a dedicated gateway; its processes start at once (status Creating, then Running)."""
    with user_errors(json_out):
        spec = read_json_file(spec_file, "gateway spec file")
        if not isinstance(spec, dict):
            raise CliError(f"gateway spec file {spec_file} must hold a JSON object")
        spec = absolute_tls_paths(spec, Path.cwd())
        with client_for(data_dir) as client:
            view = _wait(client, client.gateway_create(spec), wait, timeout)
    _emit(view, json_out)


@gateway_app.command("list")
def list_gateways(json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """List the gateways (the shared one and the dedicated ones)."""
    with user_errors(json_out), client_for(data_dir) as client:
        gateways = client.gateway_list()
    if json_out:
        emit_json(gateways)
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "TYPE", "STATUS", "INTERNET ENDPOINT", "VPC ENDPOINT", "SERVICES"):
        table.add_column(col, overflow="fold")
    for g in gateways:
        table.add_row(
            g["name"],
            g.get("type", ""),
            g["status"],
            g["endpoints"].get("internet") or "-",
            g["endpoints"].get("intranet") or "-",
            str(len(g.get("services") or [])),
        )
    print_table(table)


@gateway_app.command("desc")
def desc(name: Name, json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """Describe a gateway: status, endpoints, allow-lists, limits, TLS, processes, services."""
    with user_errors(json_out), client_for(data_dir) as client:
        view = client.gateway_describe(name)
    _emit(view, json_out)


@gateway_app.command("modify")
def modify(
    name: Name,
    spec_file: PatchFile = None,
    define: Assignments = None,
    wait: Wait = False,
    timeout: Timeout = 60,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Change a gateway: -s PATCH.json and/or -D key=value (e.g. -D rate_limit=20). Allow-lists
    and limits apply at once; listeners, TLS and workers restart the gateway's processes."""
    with user_errors(json_out):
        patch = read_patch(spec_file, define)
        spec = absolute_tls_paths(patch.spec, Path.cwd()) if patch.spec is not None else None
        assignments = patch.assignments
        if isinstance(patch.defined.get("tls"), dict):  # -D tls.cert=relative/path: made absolute too
            fixed = absolute_tls_paths({"tls": patch.defined["tls"]}, Path.cwd())["tls"]
            assignments = [a for a in assignments if not a.startswith(("tls.cert=", "tls.key="))]
            assignments += [f"tls.{k}={fixed[k]}" for k in ("cert", "key") if k in fixed]
        body = Patch(spec, assignments, patch.defined).body()
        with client_for(data_dir) as client:
            view = _wait(client, client.gateway_modify(name, body), wait, timeout)
    _emit(view, json_out)


@gateway_app.command("delete")
def delete(name: Name, json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """Delete a dedicated gateway (refused while services are bound to it)."""
    with user_errors(json_out), client_for(data_dir) as client:
        out = client.gateway_delete(name)
    if json_out:
        emit_json(out)
    else:
        print(f"gateway {name} deleted")


@gateway_app.command("run")
def run(
    name: Annotated[str, typer.Option("--name", help="the gateway to serve ('shared' or a dedicated one)")],
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store-url",
            help=f"the registry (postgresql+psycopg://...); better in ${STORE_URL_ENV} (argv shows in ps)",
            show_default=False,
        ),
    ] = None,
    internet_bind: Annotated[
        str | None, typer.Option(help="Internet listener address (default: the record's)", show_default=False)
    ] = None,
    vpc_bind: Annotated[
        str | None, typer.Option(help="VPC listener address (default: the record's)", show_default=False)
    ] = None,
    metrics_bind: Annotated[
        str | None,
        typer.Option(
            help="metrics listener address; the control plane's telemetry must reach it", show_default=False
        ),
    ] = None,
    advertise_internet: Annotated[
        str | None,
        typer.Option(help="the Internet address to register (NAT, load balancer)", show_default=False),
    ] = None,
    advertise_vpc: Annotated[
        str | None, typer.Option(help="the VPC address to register (NAT, load balancer)", show_default=False)
    ] = None,
    replica_name: Annotated[
        str | None,
        typer.Option(help="this replica's name in the registry (default: HOSTNAME/BIND)", show_default=False),
    ] = None,
    workers: Annotated[int, typer.Option(help="worker processes sharing the ports")] = 1,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis for QPS limits shared by every replica", show_default=False)
    ] = None,
    access_log: Annotated[
        str | None, typer.Option(help="JSON access log file ('-': stderr)", show_default=False)
    ] = None,
    grace: Annotated[float, typer.Option(help="seconds requests in flight get on SIGTERM")] = 10.0,
) -> None:
    """Run one replica of a gateway on this machine, from the shared registry (PostgreSQL).

    It serves the services bound to gateway NAME, follows the registry's change feed, registers
    itself as a replica (addresses, metrics address, heartbeat: `openeas gateway desc NAME`) and
    unregisters on SIGTERM. Put a load balancer or a DNS name in front of the replicas and set it
    as the gateway's advertised address."""
    if store_url:
        os.environ[STORE_URL_ENV] = store_url  # handed on in-process: never on a child's argv
    if not os.environ.get(STORE_URL_ENV):
        typer.echo(f"Error: give the registry URL in ${STORE_URL_ENV} (or --store-url)", err=True)
        raise typer.Exit(2)
    replica = replica_name or f"{socket.gethostname()}/{internet_bind or vpc_bind or 'record-listeners'}"
    argv = ["--name", name, "--replica", replica, "--workers", str(workers), "--grace", str(grace)]
    options = {
        "--internet-bind": internet_bind,
        "--vpc-bind": vpc_bind,
        "--metrics-bind": metrics_bind,
        "--advertise-internet": advertise_internet,
        "--advertise-vpc": advertise_vpc,
        "--redis-url": redis_url,
        "--access-log": access_log,
    }
    for flag, value in options.items():
        if value is not None:
            argv += [flag, value]
    from openeas.gateway.__main__ import main as gateway_main

    raise typer.Exit(gateway_main(argv))
