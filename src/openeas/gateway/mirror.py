"""Traffic mirroring (spec `mirror: {target: [...], ratio: 0-100}`): copy a share of a service's
requests to other services, fire and forget.

Which requests: an accumulator per service adds `ratio` per request and copies one each time it
passes 100, so ratio 50 copies exactly every second request and 10 every tenth (no randomness:
counts in tests are exact). A copy goes to one instance of each target (round robin), with the
request's method, forwarded path and query, its headers (the gateway never forwards
Authorization), and its body, captured while it streams to the main instance (bodies are at most
the gateway's max body size) and sent once the request body is complete.

A copy never delays or fails the main request: it runs as its own task on its own connection
(`Connection: close`), its response is read and dropped, and at most `max_in_flight` copies are
open per gateway process; beyond that, or when a target has no ready instance, the copy is
dropped and counted (`Mirrors.counts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Protocol

from openeas.gateway.headers import mirror_head
from openeas.gateway.snapshot import MirrorRoute, Upstream

log = logging.getLogger("openeas.gateway")

MAX_IN_FLIGHT = 128  # copies open at once per gateway process
COPY_TIMEOUT_S = 30.0  # a copy's whole exchange with the target instance


class MirroredRequest(Protocol):
    """What a copy reads of the main request (`exchange.Exchange`)."""

    method: bytes
    target: bytes  # forwarded path and query
    fwd: list[bytes]  # forwarded header lines, 4 items each (headers.read_request_head)
    has_host: bool
    content_length: int  # -1: none
    body_chunked: bool
    request_id: bytes
    body_in: int  # body bytes received so far
    pending: list[bytes] | None  # body bytes received before its turn (pipelining)
    req_done: bool
    discard: bool  # answered before its body ended: the rest is skipped


@dataclass
class MirrorCounts:
    sent: int = 0  # copies whose response came back (any status)
    dropped: int = 0  # over max_in_flight, or a target without a ready instance
    failed: int = 0  # connection error or timeout at the target
    incomplete: int = 0  # the main request's body was not read whole (answered early)


class ServiceMirror:
    """One service's mirror settings and its accumulator (kept across snapshots)."""

    __slots__ = ("acc", "mirrors", "next", "route")

    def __init__(self, mirrors: Mirrors, route: MirrorRoute) -> None:
        self.mirrors = mirrors
        self.route = route
        self.acc = 0
        self.next = 0  # round robin over each target's instances

    def begin(self, ex: MirroredRequest) -> MirrorCopy | None:
        """Called once per routed request: a copy to fill (None: this one is not mirrored)."""
        self.acc += self.route.ratio
        if self.acc < 100:
            return None
        self.acc -= 100
        copy = MirrorCopy(self)
        if ex.body_in:  # a pipelined request whose body came before its turn: it is in `pending`
            if ex.body_chunked or not ex.pending:
                self.mirrors.counts.incomplete += 1
                return None
            copy.add(b"".join(ex.pending))
        if ex.req_done:
            copy.done(ex)
            return None
        return copy


@dataclass
class MirrorCopy:
    """The body of one mirrored request, captured while it streams."""

    mirror: ServiceMirror
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)

    def done(self, ex: MirroredRequest) -> None:
        """The request body is complete (or the request ended): send the copies."""
        mirrors = self.mirror.mirrors
        if ex.discard or self.size != ex.body_in:
            mirrors.counts.incomplete += 1
            return
        mirrors.send(self.mirror, ex, self.chunks, self.size)


class Mirrors:
    """Per gateway process: the services' mirrors, the bound on copies in flight, the counts."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT, timeout_s: float = COPY_TIMEOUT_S) -> None:
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.in_flight = 0
        self.counts = MirrorCounts()
        self.services: dict[str, ServiceMirror] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def for_route(self, service: str, route: MirrorRoute) -> ServiceMirror:
        """The mirror of `service` under a new snapshot (the accumulator carries over)."""
        mirror = self.services.get(service)
        if mirror is None:
            mirror = self.services[service] = ServiceMirror(self, route)
        else:
            mirror.route = route
        return mirror

    def keep_only(self, services: set[str]) -> None:
        for name in [n for n in self.services if n not in services]:
            del self.services[name]

    def send(self, mirror: ServiceMirror, ex: MirroredRequest, chunks: list[bytes], size: int) -> None:
        head = mirror_head(
            ex.method, ex.target, ex.fwd, ex.has_host, ex.content_length, ex.body_chunked, ex.request_id, size
        )
        for _service, upstreams in mirror.route.targets:
            if not upstreams or self.in_flight >= self.max_in_flight:
                self.counts.dropped += 1
                continue
            upstream = upstreams[mirror.next % len(upstreams)]
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._copy(upstream, head, chunks))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        mirror.next += 1

    async def _copy(self, upstream: Upstream, head: bytes, chunks: list[bytes]) -> None:
        try:
            await asyncio.wait_for(self._exchange(upstream, head, chunks), self.timeout_s)
            self.counts.sent += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.counts.failed += 1
            log.debug("mirror copy to %s:%d failed: %r", upstream.host, upstream.port, exc)
        finally:
            self.in_flight -= 1

    @staticmethod
    async def _exchange(upstream: Upstream, head: bytes, chunks: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
        try:
            writer.writelines([head, *chunks])
            await writer.drain()
            while await reader.read(65536):  # the response is dropped; the instance closes after it
                pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
