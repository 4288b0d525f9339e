"""What a gateway needs to route an Async service: its queue server's address and the route limits.

The gateway's snapshot (an "async queue hook" there) sends `<endpoint>` and `<endpoint>/sink` of an
Async service to the queue server registered in `queue_servers`, never to the instances (the
dispatcher feeds those). The queue server is one upstream that long-polls (`_timeout_` up to 60 s)
and takes many requests at once, so the route gets a longer timeout and a high admission limit.
"""

from __future__ import annotations

from typing import Any

from openeas.queue import registration
from openeas.spec.queue import ASYNC_TYPE
from openeas.store import Registry

ROUTE_TIMEOUT_S = 90.0  # above the longest `_timeout_` a get may ask (60 s)
ROUTE_IN_FLIGHT = 4096  # requests at once on the queue server (puts, long polls)
ROUTE_WAITING = 4096


def is_async(spec: dict[str, Any]) -> bool:
    meta = spec.get("metadata")
    return isinstance(meta, dict) and meta.get("type") == ASYNC_TYPE


def async_upstreams(registry: Registry) -> dict[str, tuple[str, str, int]]:
    """service -> (upstream id, host, port) of each live queue server."""
    out = {}
    for name, rec in registration.all_servers(registry.engine).items():
        upstream = _upstream(rec)
        if upstream is not None:
            out[name] = upstream
    return out


def async_upstream(registry: Registry, service: str) -> tuple[str, str, int] | None:
    """(upstream id, host, port) of `service`'s live queue server, or None."""
    rec = registration.lookup(registry.engine, service)
    return _upstream(rec) if rec is not None else None


def _upstream(rec: registration.QueueServerRecord) -> tuple[str, str, int] | None:
    if not rec.alive:
        return None
    host, _, port = rec.url.removeprefix("http://").rpartition(":")
    return (f"{rec.service}~queue", host, int(port))
