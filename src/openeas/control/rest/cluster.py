"""The control servers of this registry and which one leads (`openeas status`):

    GET /api/v2/control/servers -> {"leader": {"id", "api", "term"} | null, "this": id,
                                    "servers": [{"id", "api", "pid", "host", "role", "seen_at"}]}

`role` is `leader`, `follower`, or `gone` (no lease attempt for three lease lifetimes: a server
that was killed; a clean stop removes its row). Any server answers; all read the same registry.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.leadership import Leadership
from openeas.control.rest.inputs import PREFIX
from openeas.control.rest.routes import Endpoint
from openeas.store import Registry
from openeas.store.leases import current_lease, list_servers


def cluster_view(registry: Registry, leadership: Leadership | None) -> dict[str, Any]:
    """Blocking (reads the store): run it in a thread."""
    now = time.time()
    lease = current_lease(registry)
    live_lease = lease if lease is not None and lease.expires_at > now else None
    ttl = leadership.ttl_s if leadership is not None else 6.0
    servers = []
    leader = None
    for entry in list_servers(registry):
        # on SQLite the one server holds the lease under a fixed name (control/leadership.py)
        mine = leadership is not None and entry.id == leadership.server_id
        holder = leadership.holder if leadership is not None and mine else entry.id
        if live_lease is not None and live_lease.holder == holder:
            role = "leader"
            leader = {"id": entry.id, "api": entry.api, "term": live_lease.fencing}
        elif now - entry.seen_at > 3 * ttl:
            role = "gone"
        else:
            role = "follower"
        servers.append({
            "id": entry.id, "api": entry.api, "pid": entry.pid, "host": entry.host, "role": role,
            "seen_at": entry.seen_at,
        })
    this = leadership.server_id if leadership is not None else None
    return {"leader": leader, "this": this, "servers": servers}


def cluster_endpoints(registry: Registry, leadership: Leadership | None) -> list[Endpoint]:
    async def servers(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(cluster_view, registry, leadership))

    return [Endpoint("GET", PREFIX + "/control/servers", servers)]
