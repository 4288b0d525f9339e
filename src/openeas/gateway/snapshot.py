"""The routing snapshot: everything a gateway needs to serve, immutable, built from the store.

A gateway never asks the control plane anything on the request path. It holds one
RoutingSnapshot and replaces it whole (one reference swap) when the store's change feed moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openeas.store import GatewayRecord, Registry

SHARED_GATEWAY = "shared"
SHARED_MAX_BODY_BYTES = 1024 * 1024  # EAS gateway limit: 1 MB request bodies


@dataclass(frozen=True, slots=True)
class Upstream:
    instance_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    name: str
    token: bytes
    upstreams: tuple[Upstream, ...]  # ready instances only
    timeout_s: float  # metadata.rpc.keepalive: receive + queue + compute until the response starts
    status: str  # service status, to explain an empty upstream list ("Stopped", "Waiting", ...)


@dataclass(frozen=True, slots=True)
class Listener:
    kind: str  # "internet" | "intranet"
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    name: str
    listeners: tuple[Listener, ...]
    max_body_bytes: int = SHARED_MAX_BODY_BYTES


@dataclass(frozen=True)
class RoutingSnapshot:
    version: int
    services: dict[str, ServiceRoute] = field(default_factory=dict)


def gateway_settings(record: GatewayRecord) -> GatewaySettings:
    spec: dict[str, Any] = record.spec
    listeners = []
    listen = spec.get("listen", {})
    if spec.get("enable_internet", True) and listen.get("internet"):
        host, port = _split_hostport(listen["internet"])
        listeners.append(Listener("internet", host, port))
    if spec.get("enable_intranet", True) and listen.get("intranet"):
        host, port = _split_hostport(listen["intranet"])
        listeners.append(Listener("intranet", host, port))
    return GatewaySettings(
        name=record.name,
        listeners=tuple(listeners),
        max_body_bytes=int(spec.get("max_body_bytes", SHARED_MAX_BODY_BYTES)),
    )


def build_snapshot(registry: Registry, gateway: str) -> RoutingSnapshot:
    """Read the store once and build the routes of the services bound to `gateway`."""
    version = registry.version()
    ready: dict[str, list[Upstream]] = {}
    for inst in registry.list_instances():
        if inst.state == "ready":
            ready.setdefault(inst.service, []).append(Upstream(inst.id, inst.host, inst.port))
    services = {}
    for svc in registry.list_services():
        if svc.gateway != gateway:
            continue
        keepalive_ms = svc.spec.get("metadata", {}).get("rpc", {}).get("keepalive", 5000)
        services[svc.name] = ServiceRoute(
            name=svc.name,
            token=svc.token.encode(),
            upstreams=tuple(ready.get(svc.name, ())) if svc.desired == "running" else (),
            timeout_s=keepalive_ms / 1000.0,
            status=svc.status,
        )
    return RoutingSnapshot(version=version, services=services)


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
