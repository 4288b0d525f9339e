"""The gateway as an object: listeners, the current routes, the connections, a 1 s sweep.

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
from dataclasses import replace

from openeas.gateway.accesslog import AccessLog
from openeas.gateway.balancer import RouteEntry, UpstreamState
from openeas.gateway.proxy import Exchange
from openeas.gateway.server import ClientConnection
from openeas.gateway.snapshot import GatewaySettings, Listener, RoutingSnapshot, Upstream
from openeas.gateway.upstream import prune_idle

log = logging.getLogger("openeas.gateway")

IDLE_TIMEOUT_S = 60.0  # client keep-alive connections with no request in flight
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
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        pool_idle_s: float = POOL_IDLE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes
        self.access_log = access_log
        self.reuse_port = reuse_port
        self.idle_timeout_s = idle_timeout_s
        self.pool_idle_s = pool_idle_s
        self.connect_timeout_s = connect_timeout_s
        self.snapshot = RoutingSnapshot(version=0)
        self.routes: dict[bytes, RouteEntry] = {}
        self.states: dict[Upstream, UpstreamState] = {}
        self.connections: set[ClientConnection] = set()
        self.bound: list[Listener] = []  # the listeners with their actual ports
        self.stopping = False
        self._servers: list[asyncio.Server] = []
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
        """Bind every listener (BindError if one cannot be bound) and start serving."""
        self._loop = asyncio.get_running_loop()
        socks: list[tuple[Listener, socket.socket]] = []
        try:
            for listener in self.settings.listeners:
                try:
                    sock = bind_socket(listener.host, listener.port, self.reuse_port)
                except OSError as exc:
                    raise BindError(listener, exc) from exc
                socks.append((listener, sock))
            for listener, sock in socks:
                kind = listener.kind
                server = await self._loop.create_server(
                    lambda kind=kind: ClientConnection(self, kind),  # type: ignore[misc]
                    sock=sock,
                    backlog=BACKLOG,
                )
                self._servers.append(server)
                self.bound.append(replace(listener, port=sock.getsockname()[1]))
        except BaseException:
            for _, sock in socks:
                sock.close()
            for server in self._servers:
                server.close()
            self._servers.clear()
            raise
        self._sweeper = self._loop.call_later(1.0, self._sweep)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace_s`), close the rest."""
        self.stopping = True
        for server in self._servers:
            server.close()
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for state in self.states.values():
            state.retired = True
            prune_idle(state, float("inf"), 0.0)
        if self.access_log is not None:
            self.access_log.flush()
        await asyncio.sleep(0)  # let transports run their close callbacks

    # -- routing snapshot ------------------------------------------------------------------
    def set_snapshot(self, snapshot: RoutingSnapshot) -> None:
        """Serve `snapshot` from now on. Instances that stay keep their pools and counters."""
        old = self.states
        states: dict[Upstream, UpstreamState] = {}
        routes: dict[bytes, RouteEntry] = {}
        for name, route in snapshot.services.items():
            ups: list[UpstreamState] = []
            for upstream in route.upstreams:
                state = states.get(upstream) or old.get(upstream) or UpstreamState(upstream)
                states[upstream] = state
                ups.append(state)
            routes[name.encode()] = RouteEntry(route, ups)
        for upstream, state in old.items():
            if upstream not in states:
                state.retired = True
                prune_idle(state, float("inf"), 0.0)
        self.states = states
        self.routes = routes
        self.snapshot = snapshot

    # -- per request -----------------------------------------------------------------------
    def new_request_id(self) -> bytes:
        self._rid_next += 1
        return b"%s-%06x" % (self._rid_prefix, self._rid_next)

    def log_exchange(self, ex: Exchange) -> None:
        if self.access_log is not None:
            self.access_log.write(ex, self.loop.time(), ex.client.listener)

    # -- housekeeping ----------------------------------------------------------------------
    def _sweep(self) -> None:
        loop = self.loop
        now = loop.time()
        for conn in list(self.connections):
            conn.sweep(now, self.idle_timeout_s)
        for state in self.states.values():
            if state.idle:
                prune_idle(state, now, self.pool_idle_s)
        if self.access_log is not None:
            try:
                self.access_log.flush()
            except OSError as exc:
                log.warning("cannot write the access log: %s", exc)
        self._sweeper = loop.call_later(1.0, self._sweep)

    def ready_line(self) -> str:
        return ready_line(self.settings.name, self.bound)


def ready_line(name: str, listeners: list[Listener] | tuple[Listener, ...]) -> str:
    """`openeas-gateway NAME ready internet=host:port intranet=host:port`"""
    parts = []
    for lst in listeners:
        host = f"[{lst.host}]" if ":" in lst.host else lst.host
        parts.append(f"{lst.kind}={host}:{lst.port}")
    return f"openeas-gateway {name} ready {' '.join(parts)}".rstrip()
