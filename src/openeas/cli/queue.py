"""`openeas queue stat|get|retry NAME`: the queues of an asynchronous (metadata.type "Async") service.

    openeas queue stat NAME            lengths, in flight, dead letters, oldest waiting item, counters,
                                       and the input / sink endpoints for QueueClient
    openeas queue get NAME             the dead letters (requests that failed queue.max_delivery times)
    openeas queue retry NAME [INDEX..] put dead letters back in the queue (all when no index is given)

Callers put and read requests with the queue API itself (`<endpoint>` and `<endpoint>/sink`,
the service token); see docs/async.md.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from openeas.cli.output import DataDir, JsonOut, client_for, emit_json, pairs, print_table, user_errors

queue_app = typer.Typer(
    help="Queues of asynchronous services: stat, get (dead letters), retry.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="service name (an Async service)", show_default=False)]
PREVIEW = 60


def _preview(data_b64: str) -> str:
    raw = base64.b64decode(data_b64)
    text = raw[:PREVIEW].decode("utf-8", errors="replace")
    return text + ("…" if len(raw) > PREVIEW else "")


@queue_app.command("stat")
def stat(name: Name, json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """Queue lengths, requests in flight, dead letters, age of the oldest waiting request."""
    with user_errors(json_out), client_for(data_dir) as client:
        out: dict[str, Any] = client.get(name, "queue")
    if json_out:
        emit_json(out)
        return
    inp, sink, c = out["input"], out["sink"], out["counters"]
    endpoints = out.get("endpoints") or {}
    internet = endpoints.get("internet") or {}
    rows: list[tuple[str, Any]] = [
        ("Service", out["service"]),
        ("Instances fed", out["instances"]),
        ("Input queue", f"{inp['length']} / {inp['max_length']} ({inp['in_flight']} in flight)"),
        ("Oldest waiting", f"{inp['oldest_age_s']:.1f} s"),
        ("Dead letters", inp["dead"]),
        ("Sink", f"{sink['length']} / {sink['max_length']}"),
        (
            "Delivered",
            f"{c['delivered']} ({c['redelivered']} again, {c['retried']} retried, {c['dead']} dead)",
        ),
        ("Results", f"{c['completed']} ({c['duplicates']} duplicates dropped, {c['expired']} expired)"),
        ("Input endpoint", internet.get("input") or "-"),
        ("Sink endpoint", internet.get("sink") or "-"),
    ]
    pairs(rows)


@queue_app.command("get")
def get(
    name: Name,
    limit: Annotated[int, typer.Option("--limit", help="show at most this many")] = 100,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """List the dead letters: requests given up on after queue.max_delivery failed tries."""
    with user_errors(json_out), client_for(data_dir) as client:
        dead: list[dict[str, Any]] = client.request(
            "GET", client.service_path(name, "queue/dead"), params={"limit": limit}
        )
    if json_out:
        emit_json(dead)
        return
    if not dead:
        print(f"no dead letters in {name}")
        return
    table = Table(box=None, header_style="bold")
    for col in ("INDEX", "REQUEST ID", "TRIES", "AGE", "DATA"):
        table.add_column(col, overflow="fold")
    now = time.time()
    for d in dead:
        table.add_row(
            str(d["index"]),
            d["tags"].get("requestId", ""),
            str(d["deliveries"]),
            f"{now - d['created_at']:.0f} s",
            _preview(d["data"]),
        )
    print_table(table)


@queue_app.command("retry")
def retry(
    name: Name,
    indexes: Annotated[list[int] | None, typer.Argument(help="dead letters to retry (default: all)")] = None,
    json_out: JsonOut = False,
    data_dir: DataDir = None,
) -> None:
    """Put dead letters back in the input queue, with their try count reset."""
    body = {"indexes": indexes} if indexes else {}
    with user_errors(json_out), client_for(data_dir) as client:
        out: dict[str, Any] = client.request("POST", client.service_path(name, "queue/retry"), body)
    if json_out:
        emit_json(out)
    else:
        print(f"{out['retried']} dead letter(s) of {name} back in the queue")
