"""The routing snapshot: everything a gateway needs to serve, immutable, built from the store.

A gateway never asks the control plane anything on the request path. It holds one
RoutingSnapshot and replaces it (one reference swap) when the store's change feed moves. It is
built whole from the store at start (`build_snapshot`); afterwards only the services the feed
names are read again (`snapshot_update.apply_changes`), so a status flip of one service out of
10,000 costs one service's reads, not everyone's.
The snapshot also carries the gateway's own settings (allow-lists, limits) read from its record,
so those apply without a restart; listeners and TLS are bound at start only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from openeas.gateway.bounds import DEFAULT_BOUNDS, ClientBounds
from openeas.gateway.groups import GroupRoute
from openeas.gateway.pickers import DEFAULT_STRATEGY, strategy_for
from openeas.processors.llm.defaults import gateway_in_flight
from openeas.queue import routing as queue_routing  # async queue hook
from openeas.spec import SpecError, parse_gateway_spec
from openeas.spec.gateway import GATEWAY_NAME_RE, SHARED_GROUP_QPS, SHARED_SERVICE_QPS
from openeas.spec.service import RpcSpec
from openeas.store import GatewayRecord, GroupRecord, NotFound, Registry, ServiceRecord

log = logging.getLogger("openeas.gateway")

SHARED_GATEWAY = "shared"
SHARED_MAX_BODY_BYTES = 1024 * 1024  # EAS gateway limit: 1 MB request bodies
DEFAULT_WORKER_THREADS: int = RpcSpec.model_fields["worker_threads"].default
DEFAULT_MAX_QUEUE_SIZE: int = RpcSpec.model_fields["max_queue_size"].default


@dataclass(frozen=True, slots=True)
class Upstream:
    instance_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class MirrorRoute:
    """`mirror`: copy `ratio` percent of the requests to each target's ready instances."""

    ratio: int
    targets: tuple[tuple[str, tuple[Upstream, ...]], ...]  # (service, ready instances), any gateway


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    name: str
    token: bytes
    upstreams: tuple[Upstream, ...]  # ready instances only
    timeout_s: float  # metadata.rpc.keepalive: receive + queue + compute until the response starts
    status: str  # service status, to explain an empty upstream list ("Stopped", "Waiting", ...)
    group: str | None = None  # metadata.group: counted against the gateway's group_rate_limit
    rate_limit: int | None = None  # gateway_policy.rate_limit.limit when enabled; None: gateway default
    concurrency_limit: int = 0  # gateway_policy.concurrency_limit.limit when enabled; 0: none
    instance_rate_limit: int = 0  # metadata.rpc.rate_limit: QPS per instance; 0: none
    token_rate_limit: int = 0  # gateway_policy.token_rate_limit.limit: tokens per minute; 0: none
    worker_threads: int = DEFAULT_WORKER_THREADS  # requests in flight per instance
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE  # requests waiting per instance beyond those
    scale_from_zero: bool = False  # autoscaler.min == 0: with no instance, hold requests for one
    mirror: MirrorRoute | None = None
    picker: str = DEFAULT_STRATEGY  # how an instance is chosen (pickers.py)
    old_token: bytes = b""  # the previous token during a rotation (also accepted); b"": none


@dataclass(frozen=True, slots=True)
class Listener:
    kind: str  # "internet" | "intranet" | "metrics"
    host: str
    port: int


DEFAULT_METRICS = Listener("metrics", "127.0.0.1", 0)  # loopback only, any free port


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: str  # PEM certificate chain file
    key: str  # PEM private key file
    domains: tuple[str, ...] = ()  # custom domains, served with the same certificate


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    name: str
    listeners: tuple[Listener, ...]
    max_body_bytes: int = SHARED_MAX_BODY_BYTES
    # allow-lists as CIDR strings; None: anyone (the record does not restrict that access method)
    internet_acl: tuple[str, ...] | None = None
    intranet_acl: tuple[str, ...] | None = None
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For names the client
    tls: TlsSettings | None = None
    ssl_redirect: bool = False
    rate_limit: int = 0  # QPS per service unless the service sets its own; 0: none
    group_rate_limit: int = 0  # QPS per service group; 0: none
    metrics: Listener = DEFAULT_METRICS  # /metrics and /stats, never on a data-plane listener
    bounds: ClientBounds = DEFAULT_BOUNDS  # connection limits and timeouts (bounds.py)

    def restart_needed(self, other: GatewaySettings) -> bool:
        """True when `other` differs in what is bound at start (listeners, TLS)."""
        return (self.listeners, self.tls, self.ssl_redirect, self.metrics) != (
            other.listeners,
            other.tls,
            other.ssl_redirect,
            other.metrics,
        )


@dataclass(frozen=True)
class RoutingSnapshot:
    version: int
    services: dict[str, ServiceRoute] = field(default_factory=dict)
    settings: GatewaySettings | None = None  # None: keep the settings the gateway has
    settings_error: str | None = None  # why the gateway record could not be used, if it could not
    groups: dict[str, GroupRoute] = field(default_factory=dict)  # groups with a member on this gateway


def gateway_settings(record: GatewayRecord) -> GatewaySettings:
    """The settings of a gateway record; raises SpecError naming the bad field.

    Tolerant of the records the control plane and tests write: `name` comes from the record,
    an access method whose `enable_*` flag is absent is on when it has a `listen` address, and
    the gateway named "shared" without `rate_limit` gets the shared gateway's EAS defaults
    (1,000 QPS per service, 10,000 per group).
    """
    raw: dict[str, Any] = dict(record.spec)
    # the name is the record's; one the spec rules would refuse (an older record) is not an error here
    raw["name"] = record.name if GATEWAY_NAME_RE.match(record.name) else "gateway"
    listen = raw.get("listen") or {}
    for kind in ("internet", "intranet"):
        raw.setdefault(f"enable_{kind}", bool(listen.get(kind)))
    if record.name == SHARED_GATEWAY and "rate_limit" not in raw:
        raw["rate_limit"] = SHARED_SERVICE_QPS
        raw.setdefault("group_rate_limit", SHARED_GROUP_QPS)
    spec = parse_gateway_spec(raw)
    listeners = []
    if spec.enable_internet and spec.listen.internet:
        host, port = split_hostport(spec.listen.internet)
        listeners.append(Listener("internet", host, port))
    if spec.enable_intranet and spec.listen.intranet:
        host, port = split_hostport(spec.listen.intranet)
        listeners.append(Listener("intranet", host, port))
    tls = None
    if spec.tls is not None:
        tls = TlsSettings(spec.tls.cert, spec.tls.key, tuple(spec.tls.domains))
    metrics = DEFAULT_METRICS
    if spec.listen.metrics:
        metrics = Listener("metrics", *split_hostport(spec.listen.metrics))
    return GatewaySettings(
        name=record.name,
        listeners=tuple(listeners),
        max_body_bytes=spec.max_body_bytes,
        # absent from the record: no restriction (the spec's default for the Internet is 0.0.0.0/0)
        internet_acl=tuple(a.entry for a in spec.internet_acl) if "internet_acl" in raw else None,
        intranet_acl=tuple(a.entry for a in spec.intranet_acl) or None,
        trusted_proxies=tuple(a.entry for a in spec.trusted_proxies),
        tls=tls,
        ssl_redirect=spec.ssl_redirect,
        rate_limit=spec.rate_limit,
        group_rate_limit=spec.group_rate_limit,
        metrics=metrics,
        bounds=ClientBounds(**spec.bounds.model_dump()),
    )


def build_snapshot(registry: Registry, gateway: str) -> RoutingSnapshot:
    """Read the store once and build the routes of the services bound to `gateway`."""
    version = registry.version()
    settings, settings_error = read_settings(registry, gateway)
    ready: dict[str, list[Upstream]] = {}
    for inst in registry.list_instances():
        if inst.state == "ready":
            ready.setdefault(inst.service, []).append(Upstream(inst.id, inst.host, inst.port))
    services = {}
    records = registry.list_services()
    queue_servers = queue_routing.async_upstreams(registry)  # async queue hook
    running = {s.name for s in records if s.desired == "running"}
    for svc in records:
        if svc.gateway != gateway:
            continue
        services[svc.name] = route_of(
            svc,
            tuple(ready.get(svc.name, ())),
            queue_servers.get(svc.name),
            lambda mirror: mirror_route(mirror, ready, running),
        )
    return RoutingSnapshot(version, services, settings, settings_error, group_routes(registry, services))


def read_settings(registry: Registry, gateway: str) -> tuple[GatewaySettings | None, str | None]:
    """The gateway's settings from its record, or None and why they cannot be used."""
    try:
        return gateway_settings(registry.get_gateway(gateway)), None
    except NotFound:
        return None, f"the gateway record '{gateway}' is gone from the store"
    except SpecError as exc:
        return None, f"the gateway record '{gateway}' is not valid: {exc}"


def route_of(
    svc: ServiceRecord,
    ready: tuple[Upstream, ...],
    queue_server: tuple[str, str, int] | None,
    mirror_of: Callable[[Any], MirrorRoute | None],
) -> ServiceRoute:
    """The route of one service record: `ready` its ready instances, `queue_server` its live
    queue server (Async services), `mirror_of` the mirror of its spec with the targets' instances."""
    running = svc.desired == "running"
    route = service_route(svc.name, svc.token, svc.spec, ready if running else (), svc.status)
    # async queue hook: callers of an Async service reach its queue server, not the instances
    if queue_routing.is_async(svc.spec):
        server = queue_server if running else None
        route = replace(
            route,
            upstreams=(Upstream(*server),) if server else (),
            timeout_s=max(route.timeout_s, queue_routing.ROUTE_TIMEOUT_S),
            worker_threads=queue_routing.ROUTE_IN_FLIGHT,
            max_queue_size=queue_routing.ROUTE_WAITING,
            instance_rate_limit=0,  # rpc.rate_limit is per instance, not per queue server
            scale_from_zero=False,
        )
    if svc.old_token:
        route = replace(route, old_token=svc.old_token.encode())
    if svc.spec.get("mirror"):
        route = replace(route, mirror=mirror_of(svc.spec["mirror"]))
    return route


def group_routes(registry: Registry, services: dict[str, ServiceRoute]) -> dict[str, GroupRoute]:
    """The groups of the services routed here, with the token and weights of their store rows."""
    members = group_members(services)
    if not members:
        return {}
    rows = {g.name: g for g in registry.list_groups()}
    return {name: group_route(name, names, rows.get(name)) for name, names in members.items()}


def group_members(services: dict[str, ServiceRoute]) -> dict[str, list[str]]:
    """group name -> the names of its services among `services`."""
    members: dict[str, list[str]] = {}
    for route in services.values():
        if route.group:
            members.setdefault(route.group, []).append(route.name)
    return members


def group_route(name: str, names: list[str], row: GroupRecord | None) -> GroupRoute:
    """The route of group `name` with member services `names` and its store row (None: absent)."""
    return GroupRoute(
        name=name,
        token=row.token.encode() if row is not None else b"",
        traffic_mode=row.traffic_mode if row is not None else "auto",
        weights=dict(row.weights) if row is not None else {},
        members=tuple(sorted(names)),
        old_token=row.old_token.encode() if row is not None else b"",
    )


def service_route(
    name: str, token: str, spec: dict[str, Any], upstreams: tuple[Upstream, ...], status: str
) -> ServiceRoute:
    """The route of one service from its stored spec (missing fields take the EAS defaults)."""
    metadata = _obj(spec.get("metadata"))
    rpc = _obj(metadata.get("rpc"))
    policy = _obj(_obj(spec.get("networking")).get("gateway_policy"))
    return ServiceRoute(
        name=name,
        token=token.encode(),
        upstreams=upstreams,
        timeout_s=_int(rpc.get("keepalive"), 5000, 1) / 1000.0,
        status=status,
        group=metadata.get("group") or None,
        rate_limit=_policy_limit(policy.get("rate_limit")),
        concurrency_limit=_policy_limit(policy.get("concurrency_limit")) or 0,
        token_rate_limit=_policy_limit(policy.get("token_rate_limit")) or 0,
        instance_rate_limit=_int(rpc.get("rate_limit"), 0, 0),
        worker_threads=_int(rpc.get("worker_threads"), _default_in_flight(spec), 1),
        max_queue_size=_int(rpc.get("max_queue_size"), DEFAULT_MAX_QUEUE_SIZE, 0),
        scale_from_zero=_obj(spec.get("autoscaler")).get("min") == 0,
        picker=strategy_for(spec),
    )


def _default_in_flight(spec: dict[str, Any]) -> int:
    """Per-instance concurrency when the spec sets no rpc.worker_threads: an llm instance's
    n_parallel (it decodes that many sequences together), else the EAS default."""
    if spec.get("processor") == "llm":
        return gateway_in_flight(spec.get("model_config"))
    return DEFAULT_WORKER_THREADS


def mirror_route(mirror: Any, ready: dict[str, list[Upstream]], running: set[str]) -> MirrorRoute | None:
    """The mirror of a stored spec with each target's ready instances (targets on any gateway)."""
    mirror = _obj(mirror)
    targets = mirror.get("target") or []
    targets = [targets] if isinstance(targets, str) else targets
    ratio = _int(mirror.get("ratio"), 0, 0)
    if not ratio or not isinstance(targets, list):
        return None
    return MirrorRoute(
        min(ratio, 100),
        tuple((t, tuple(ready.get(t, ())) if t in running else ()) for t in targets if isinstance(t, str)),
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(int(value), minimum)


def _policy_limit(policy: Any) -> int | None:
    """`{"enable": true, "limit": N}` -> N; disabled or absent -> None."""
    if not isinstance(policy, dict) or not policy.get("enable"):
        return None
    return _int(policy.get("limit"), 1000, 1)


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
