"""`openeas status`: the control servers on this registry, which one leads, each one's role.

    openeas status [--json]
    OPENEAS_API=http://a:8800,http://b:8800 openeas status --json   # asks whichever answers
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from openeas.cli.output import DataDir, JsonOut, client_for, emit_json, pairs, print_table, user_errors


def status(json_out: JsonOut = False, data_dir: DataDir = None) -> None:
    """The control servers sharing this registry: the leader (it runs the reconciler,
    autoscaler, telemetry and gateways) and the followers (they serve the API)."""
    with user_errors(json_out), client_for(data_dir) as client:
        view: dict[str, Any] = client.request("GET", "/api/v2/control/servers")
    if json_out:
        emit_json(view)
        return
    leader = view.get("leader")
    pairs([("Leader", f"{leader['api']} (term {leader['term']})" if leader else "none (an election is due)")])
    table = Table(box=None, header_style="bold")
    for col in ("SERVER", "API", "ROLE", "HOST", "PID"):
        table.add_column(col, overflow="fold")
    for s in view.get("servers") or []:
        table.add_row(s["id"], s["api"], s["role"], s["host"], str(s["pid"]))
    print_table(table)
