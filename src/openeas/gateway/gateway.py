"""The gateway as an object: listeners, the current routes, the connections, a 1 s sweep.

It accepts connections (`client_connection.py`), installs each routing snapshot as route tables
(`routes.py`, `instances.py`), holds requests of scale-from-zero services, and is the one place a
finished request is counted and logged (`log_exchange`: metrics and the access log).

`Gateway` is what `python -m openeas.gateway` runs and what tests can run in-process:

    gw = Gateway(settings)
    await gw.start()            # binds every listener or raises BindError
    gw.set_snapshot(snapshot)   # any time; one reference swap
    ...
    await gw.stop()             # stop accepting, let in-flight requests finish
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from time import perf_counter

from openeas.gateway import admission
from openeas.gateway.accesslog import AccessLog
from openeas.gateway.admission import PEER_DENIED, ListenerAccess, listener_access
from openeas.gateway.bounds import CONNECTION_EVENTS
from openeas.gateway.client_connection import ClientConnection
from openeas.gateway.exchange import Exchange
from openeas.gateway.instances import UpstreamState, drain_queue
from openeas.gateway.limits import GroupBuckets, ServiceLimits
from openeas.gateway.metrics import (
    UNKNOWN_SERVICE,
    GatewayMetrics,
    ServiceGauges,
    Snapshot,
    prometheus_registry,
    render_prometheus,
    stats_json,
)
from openeas.gateway.metrics_server import MetricsConnection
from openeas.gateway.mirror import Mirrors
from openeas.gateway.routes import GroupEntry, RouteEntry, group_entries
from openeas.gateway.routing import split_target
from openeas.gateway.shared_limits import SharedBucket, SharedLimiter
from openeas.gateway.snapshot import GatewaySettings, Listener, RoutingSnapshot, ServiceRoute, Upstream
from openeas.gateway.store_health import StoreHealth
from openeas.gateway.tls import TlsListener, server_context
from openeas.gateway.upstream import prune_idle

log = logging.getLogger("openeas.gateway")

POOL_IDLE_S = 2.0  # pooled instance connections (below common server keep-alives, e.g. uvicorn's 5 s)
CONNECT_TIMEOUT_S = 3.0
BACKLOG = 2048


class BindError(Exception):
    """A listener could not be bound (most often: the port is taken)."""

    def __init__(self, listener: Listener, error: OSError) -> None:
        super().__init__(
            f"cannot listen on {listener.host}:{listener.port} ({listener.kind} listener): "
            f"{error.strerror or error}"
        )
        self.listener = listener


class TlsError(Exception):
    """The TLS certificate or key cannot be loaded."""


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound, not yet listening TCP socket for host:port (host may be a name)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        snapshot: RoutingSnapshot | None = None,
        *,
        access_log: AccessLog | None = None,
        reuse_port: bool = False,
        idle_timeout_s: float | None = None,  # None: the settings' bounds.idle_timeout_s
        pool_idle_s: float = POOL_IDLE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        shared_limits: SharedLimiter | None = None,
    ) -> None:
        self.settings = settings
        # --redis-url: service / group QPS counted in Redis across processes (shared_limits.py)
        self.shared_limits = shared_limits
        self.max_body_bytes = settings.max_body_bytes
        self.max_response_head_bytes = settings.bounds.max_response_head_bytes
        self.access: dict[str, ListenerAccess] = listener_access(settings)
        self.access_log = access_log
        self.reuse_port = reuse_port
        self.idle_timeout_s = idle_timeout_s
        self.pool_idle_s = pool_idle_s
        self.connect_timeout_s = connect_timeout_s
        self.snapshot = RoutingSnapshot(version=0)
        self.routes: dict[bytes, RouteEntry] = {}
        # `<G>` and `<G>.<service>`: looked up only when `routes` has no such service
        self.groups: dict[bytes, GroupEntry] = {}
        self.states: dict[Upstream, UpstreamState] = {}
        self.service_limits: dict[str, ServiceLimits] = {}  # kept across snapshots, by service
        self.group_buckets = GroupBuckets()
        # scale from zero: requests waiting for a service's first instance, by service name
        self.held: dict[str, list[Exchange]] = {}
        self.mirrors = Mirrors()  # traffic mirroring: per-service accumulators, copies in flight
        self.connections: set[ClientConnection] = set()
        self.open_by_listener: dict[str, int] = {}  # open client connections (bounds.py)
        self.open_by_client: dict[bytes, int] = {}
        self.connection_events: dict[str, int] = dict.fromkeys(CONNECTION_EVENTS, 0)
        self.bound: list[Listener] = []  # the listeners with their actual ports
        self.metrics = GatewayMetrics()
        self.prometheus = prometheus_registry(self.metrics_snapshot)  # renders self.metrics at scrape time
        self.metrics_bound: Listener | None = None  # the metrics listener with its actual port
        self.store_health: StoreHealth | None = None  # set by __main__: the store, on /metrics
        self.started = time.time()
        self.stopping = False
        self._servers: list[asyncio.Server] = []
        self._metrics_server: asyncio.Server | None = None
        self._tls_listeners: list[TlsListener] = []
        self._record_settings: GatewaySettings | None = None  # the last settings read from the record
        self._settings_error: str | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._rid_prefix = os.urandom(5).hex().encode()
        self._rid_next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        if snapshot is not None:
            self.set_snapshot(snapshot)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Gateway.start() has not run"
        return self._loop

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener (BindError if one cannot be bound, TlsError for a bad certificate)."""
        self._loop = loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        tls = self.settings.tls
        if tls is not None:
            try:
                ctx = server_context(tls)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"cannot load the TLS certificate {tls.cert} / key {tls.key}: {exc}") from exc
        socks: list[tuple[Listener, socket.socket]] = []
        try:
            for listener in self.settings.listeners:
                try:
                    sock = bind_socket(listener.host, listener.port, self.reuse_port)
                except OSError as exc:
                    raise BindError(listener, exc) from exc
                socks.append((listener, sock))
            metrics_listener = self.settings.metrics
            try:
                metrics_sock = bind_socket(metrics_listener.host, metrics_listener.port, self.reuse_port)
            except OSError as exc:
                raise BindError(metrics_listener, exc) from exc
            socks.append((metrics_listener, metrics_sock))
            self._metrics_server = await loop.create_server(
                lambda: MetricsConnection(self.render_metrics), sock=metrics_sock, backlog=64
            )
            self.metrics_bound = replace(metrics_listener, port=metrics_sock.getsockname()[1])
            for listener, sock in socks[:-1]:
                kind = listener.kind
                self.bound.append(replace(listener, port=sock.getsockname()[1]))
                if ctx is not None:
                    tls_listener = TlsListener(
                        loop,
                        sock,
                        ctx,
                        lambda plain, kind=kind: ClientConnection(self, kind, plain),  # type: ignore[misc]
                        BACKLOG,
                    )
                    tls_listener.start()
                    self._tls_listeners.append(tls_listener)
                    continue
                server = await loop.create_server(
                    lambda kind=kind: ClientConnection(self, kind),  # type: ignore[misc]
                    sock=sock,
                    backlog=BACKLOG,
                )
                self._servers.append(server)
        except BaseException:
            for _, sock in socks:
                sock.close()
            for server in self._servers:
                server.close()
            self._servers.clear()
            if self._metrics_server is not None:
                self._metrics_server.close()
                self._metrics_server = None
            self.metrics_bound = None
            for tls_listener in self._tls_listeners:
                tls_listener.close()
            self._tls_listeners.clear()
            self.bound.clear()
            raise
        self._sweeper = loop.call_later(1.0, self._sweep)
        if self.shared_limits is not None:
            self.shared_limits.start(loop)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace_s`), close the rest."""
        self.stopping = True
        for server in self._servers:
            server.close()
        for tls_listener in self._tls_listeners:
            tls_listener.close()
        self._tls_listeners.clear()
        for conn in list(self.connections):
            conn.shutdown()
        loop = self.loop
        deadline = loop.time() + grace_s
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        if self._metrics_server is not None:  # last: scrapes still work while requests drain
            self._metrics_server.close()
            self._metrics_server = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for state in self.states.values():
            state.retired = True
            prune_idle(state, float("inf"), 0.0)
        await self.mirrors.stop()
        if self.shared_limits is not None:
            await self.shared_limits.stop()
        if self.access_log is not None:
            self.access_log.flush()
        await asyncio.sleep(0)  # let transports run their close callbacks

    # -- routing snapshot ------------------------------------------------------------------
    def set_snapshot(self, snapshot: RoutingSnapshot) -> None:
        """Serve `snapshot` from now on. Instances that stay keep their pools, counters and queues;
        services keep their rate buckets and in-flight counts."""
        if snapshot.settings_error != self._settings_error:
            self._settings_error = snapshot.settings_error
            if snapshot.settings_error:
                log.warning("%s; keeping the settings in use", snapshot.settings_error)
        if snapshot.settings is not None and snapshot.settings != self._record_settings:
            self._apply_settings(snapshot.settings)
        self._install(snapshot)

    def _install(self, snapshot: RoutingSnapshot) -> None:
        old = self.states
        states: dict[Upstream, UpstreamState] = {}
        routes: dict[bytes, RouteEntry] = {}
        old_limits = self.service_limits
        service_limits: dict[str, ServiceLimits] = {}
        groups: set[str] = set()
        for name, route in snapshot.services.items():
            ups: list[UpstreamState] = []
            for upstream in route.upstreams:
                state = states.get(upstream) or old.get(upstream) or UpstreamState(upstream)
                state.configure(route, self._instance_bucket(state, route))
                states[upstream] = state
                ups.append(state)
            limits = service_limits[name] = old_limits.get(name) or ServiceLimits()
            self._configure_limits(limits, route)
            if route.group:
                groups.add(route.group)
            entry = routes[name.encode()] = RouteEntry(route, ups, limits if limits.active else None)
            previous = self.routes.get(name.encode())
            if previous is not None and type(previous.picker) is type(entry.picker):
                entry.picker = previous.picker  # keeps its state (the prefix affinity table)
            if route.mirror is not None:
                entry.mirror = self.mirrors.for_route(name, route.mirror)
        self.group_buckets.keep_only(groups)
        if self.shared_limits is not None:
            self.shared_limits.keep_only(
                {f"service:{n}" for n in snapshot.services}
                | {f"tokens:service:{n}" for n in snapshot.services}
                | {f"group:{g}" for g in groups}
                | {f"concurrency:service:{n}" for n in snapshot.services}
                | {f"instance:{s.addr}" for s in states.values()}
            )
        self.mirrors.keep_only({n for n, r in snapshot.services.items() if r.mirror is not None})
        retired = [state for upstream, state in old.items() if upstream not in states]
        self.states = states
        self.routes = routes
        self.groups = group_entries(snapshot.groups, routes, self.groups)
        self.service_limits = service_limits
        self.snapshot = snapshot
        now = self._loop.time() if self._loop is not None else 0.0
        for state in states.values():
            if state.waiting and state.active < state.limit:  # worker_threads was raised
                drain_queue(state, now)
        for state in retired:
            state.retired = True
            prune_idle(state, float("inf"), 0.0)
            while state.waiting:  # requests queued for an instance that left: pick again
                state.waiting[0].reroute()
        if self.held:
            self._release_held(routes)

    # -- scale from zero -------------------------------------------------------------------
    def hold(self, ex: Exchange) -> None:
        """`ex`'s service has no ready instance but may scale from zero: keep the request until
        a snapshot brings an instance (or its keepalive runs out: the exchange answers 503 then)."""
        entry = ex.entry
        assert entry is not None
        held = self.held.setdefault(entry.name, [])
        full = admission.hold(entry, len(held))
        if full is not None:
            ex.reject(full)
            return
        ex.held = True
        held.append(ex)
        if len(held) == 1:
            log.info("service %s has no instance: holding requests until one is ready", entry.name)

    def unhold(self, ex: Exchange) -> None:
        """`ex` stops waiting (answered, timed out or the client left)."""
        ex.held = False
        assert ex.entry is not None
        held = self.held.get(ex.entry.name)
        if held is not None:
            with contextlib.suppress(ValueError):
                held.remove(ex)
            if not held:
                del self.held[ex.entry.name]

    def _release_held(self, routes: dict[bytes, RouteEntry]) -> None:
        """A new snapshot: send the held requests of services that have instances now (or that
        no longer scale from zero, or are gone: those get the usual answer)."""
        for name in list(self.held):
            entry = routes.get(name.encode())
            if entry is not None and entry.hold and not entry.upstreams:
                continue
            for ex in self.held.pop(name):
                ex.held = False
                ex.reroute()

    def _instance_bucket(self, state: UpstreamState, route: ServiceRoute) -> SharedBucket | None:
        """With --redis-url: the instance's QPS limit counted in Redis (by its address)."""
        shared = self.shared_limits
        if shared is None:
            return None
        return shared.bucket(f"instance:{state.addr}", route.instance_rate_limit)

    def _configure_limits(self, limits: ServiceLimits, route: ServiceRoute) -> None:
        settings = self.settings
        qps = route.rate_limit if route.rate_limit is not None else settings.rate_limit
        shared = self.shared_limits
        if shared is not None:
            gqps = settings.group_rate_limit if route.group else 0
            buckets = (
                shared.bucket(f"service:{route.name}", qps),
                shared.bucket(f"group:{route.group}", gqps),
            )
            slots = shared.concurrency(f"concurrency:service:{route.name}", route.concurrency_limit)
            limits.configure(qps, route.group, None, route.concurrency_limit, buckets, slots)
            budget = shared.budget(f"tokens:service:{route.name}", route.token_rate_limit)
            limits.configure_tokens(route.token_rate_limit, budget)
            return
        group = self.group_buckets.get(route.group, settings.group_rate_limit)
        limits.configure(qps, route.group, group, route.concurrency_limit)
        limits.configure_tokens(route.token_rate_limit)

    def _apply_settings(self, new: GatewaySettings) -> None:
        """Allow-lists, limits and the body limit from the record apply at once; listeners and
        TLS are bound at start (a change there is logged: restart the gateway to apply it)."""
        previous = self._record_settings
        self._record_settings = new
        if previous is not None and new.restart_needed(previous):
            log.warning(
                "the listeners or TLS settings of gateway '%s' changed in the store; "
                "restart the gateway to apply them (allow-lists and limits apply now)",
                new.name,
            )
        current = self.settings
        self.settings = replace(
            new,
            listeners=current.listeners,
            tls=current.tls,
            ssl_redirect=current.ssl_redirect,
            metrics=current.metrics,
        )
        self.max_body_bytes = new.max_body_bytes
        self.max_response_head_bytes = new.bounds.max_response_head_bytes  # bounds: new connections
        if (new.internet_acl, new.intranet_acl, new.trusted_proxies) != (
            current.internet_acl,
            current.intranet_acl,
            current.trusted_proxies,
        ):
            self.access = listener_access(new)
            for conn in list(self.connections):
                conn.check_access()
                if conn.special & PEER_DENIED and conn.current is None and conn.reading is None:
                    conn.shutdown()  # idle and no longer allowed: closed now

    # -- per request -----------------------------------------------------------------------
    def new_request_id(self) -> bytes:
        self._rid_next += 1
        return b"%s-%06x" % (self._rid_prefix, self._rid_next)

    def connection_event(self, why: str) -> None:
        """A connection refused or cut by a bound (bounds.CONNECTION_EVENTS): counted for /metrics."""
        self.connection_events[why] += 1

    def log_exchange(self, ex: Exchange) -> None:
        """`ex` is finished: count it (metrics) and log it (access log, when on)."""
        now = perf_counter()
        stats = ex.stats
        if stats is None:  # answered before it was routed and authorized
            stats = self.metrics.service(self._metrics_label(ex))
        else:
            stats.in_flight -= 1
            ex.stats = None
        self.metrics.record(ex, stats, now)
        if self.access_log is not None:
            self.access_log.write(ex, now, ex.client.listener)

    def _metrics_label(self, ex: Exchange) -> str:
        """The service a request that was not routed counts under: a service or group member
        of this gateway, else "-" (one label for every unknown name: no cardinality attack)."""
        service = ex.service
        if not service:  # answered before routing (403, 405, 400): its path may still name one
            split = split_target(ex.url) if ex.url else None
            service = split[0] if split is not None else b""
        entry = self.routes.get(service)
        if entry is not None:
            return entry.name
        group = self.groups.get(service)
        if group is not None and group.member is not None:
            return group.member.name
        return UNKNOWN_SERVICE

    def waiting_for_instance(self, service: str) -> int:
        """Requests of `service` held waiting for an instance (scale from zero)."""
        held = self.held.get(service)
        return len(held) if held is not None else 0

    # -- metrics ---------------------------------------------------------------------------
    def metrics_snapshot(self) -> Snapshot:
        gauges = {
            entry.name: ServiceGauges(len(entry.upstreams), self.waiting_for_instance(entry.name))
            for entry in self.routes.values()
        }
        mirror = asdict(self.mirrors.counts)
        shared = self.shared_limits
        redis = (
            {
                "up": int(shared.up),
                "fallbacks": shared.fallbacks,
                "outages": shared.outages,
                "live": shared.live,
            }
            if shared is not None
            else {}
        )
        return Snapshot(
            self.settings.name,
            os.getpid(),
            self.started,
            self.metrics.services,
            gauges,
            mirror,
            redis,
            dict(self.connection_events),
            self.store_health.metrics() if self.store_health is not None else {},
            {"dropped": self.access_log.dropped} if self.access_log is not None else {},
        )

    def render_metrics(self, path: str) -> bytes:
        """The body of `GET /metrics` or `GET /stats` on the metrics listener."""
        if path == "/stats":
            return stats_json(self.metrics_snapshot())
        return render_prometheus(self.prometheus)

    # -- housekeeping ----------------------------------------------------------------------
    def _sweep(self) -> None:
        loop = self.loop
        now = loop.time()
        for conn in list(self.connections):
            conn.sweep(now, self.idle_timeout_s)
        for state in self.states.values():
            if state.idle:
                prune_idle(state, now, self.pool_idle_s)
        for tls_listener in self._tls_listeners:
            if tls_listener.sniffing:
                tls_listener.sweep(now, self.idle_timeout_s or self.settings.bounds.head_timeout_s)
        if self.access_log is not None:
            try:
                self.access_log.flush()
            except OSError as exc:
                log.warning("cannot write the access log: %s", exc)
        self._sweeper = loop.call_later(1.0, self._sweep)

    def ready_line(self) -> str:
        metrics = [self.metrics_bound] if self.metrics_bound is not None else []
        return ready_line(self.settings.name, self.bound, metrics)


def ready_line(name: str, listeners: Sequence[Listener], metrics: Sequence[Listener] = ()) -> str:
    """`openeas-gateway NAME ready internet=host:port intranet=host:port metrics=host:port[,...]`

    (one metrics address per worker process)."""
    parts = [f"{lst.kind}={hostport(lst)}" for lst in listeners]
    if metrics:
        parts.append("metrics=" + ",".join(hostport(m) for m in metrics))
    return f"openeas-gateway {name} ready {' '.join(parts)}".rstrip()


def hostport(listener: Listener) -> str:
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    return f"{host}:{listener.port}"
