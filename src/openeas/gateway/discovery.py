"""VPC direct-connection discovery: the answer the gateway gives itself, no token (no I/O).

`GET /api/v1/servicediscovery/upstreams/<svc>` (and the older
`/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/<svc>`) on the intranet listener -> the ready
instances of the service, which the SDK's DIRECT mode then calls itself (weighted round robin).
Whether a request is one is decided with the other admission rules (`admission.off_route`).
"""

from __future__ import annotations

import json

from openeas.gateway.routes import RouteEntry
from openeas.gateway.routing import path_of

PREFIXES = (
    b"/api/v1/servicediscovery/upstreams/",
    b"/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/",
)


def service_of(url: bytes) -> bytes | None:
    """The service a discovery request asks about, or None when `url` is not one."""
    path = path_of(url)
    for prefix in PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix) :].strip(b"/")
    return None


def answer(entry: RouteEntry) -> bytes:
    """The JSON body listing the ready instances of `entry`'s service."""
    app = entry.name
    items = [{"app": app, "ip": s.host, "port": s.port, "weight": 100} for s in entry.upstreams]
    return json.dumps({"correlative": [app], "endpoints": {"items": items}}).encode()
