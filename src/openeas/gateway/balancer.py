"""Pick an instance: least outstanding requests, ties broken round-robin (no I/O).

An `UpstreamState` lives as long as its instance is in the routing snapshot: it carries the
count of requests assigned to it (in flight and waiting in its queue), a short local "down" mark
after a refused connection, the pool of idle keep-alive connections to it (see `upstream.py`), and
its limits: at most `limit` requests in flight (metadata.rpc.worker_threads), at most `queue_max`
more waiting in `waiting` (metadata.rpc.max_queue_size), and an optional QPS bucket
(metadata.rpc.rate_limit).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from openeas.gateway.groups import SmoothWeightedRR
from openeas.gateway.limits import ServiceLimits, TokenBucket
from openeas.gateway.snapshot import DEFAULT_MAX_QUEUE_SIZE, DEFAULT_WORKER_THREADS, ServiceRoute, Upstream

if TYPE_CHECKING:
    from openeas.gateway.mirror import ServiceMirror
    from openeas.gateway.proxy import Exchange
    from openeas.gateway.upstream import UpstreamConnection

DOWN_PENALTY = 1 << 30  # a marked-down instance is picked only when nothing else is left
DOWN_FOR_S = 1.0


class UpstreamState:
    __slots__ = (
        "active",
        "addr",
        "bucket",
        "down_until",
        "host",
        "idle",
        "limit",
        "outstanding",
        "port",
        "queue_max",
        "retired",
        "upstream",
        "waiting",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.host = upstream.host
        self.port = upstream.port
        self.addr = f"{upstream.host}:{upstream.port}"
        self.outstanding = 0  # requests assigned here: in flight + waiting (the balancing key)
        self.active = 0  # requests in flight (holding one of `limit`)
        self.limit = DEFAULT_WORKER_THREADS
        self.queue_max = DEFAULT_MAX_QUEUE_SIZE
        self.waiting: deque[Exchange] = deque()  # FIFO of requests waiting for a free slot
        self.bucket: TokenBucket | None = None
        self.down_until = 0.0
        self.idle: list[UpstreamConnection] = []  # LIFO: the most recently used is on top
        self.retired = False  # no longer in the snapshot: its connections are not pooled again

    def mark_down(self, now: float) -> None:
        self.down_until = now + DOWN_FOR_S

    def configure(self, route: ServiceRoute) -> None:
        """Take the instance limits of the service's current spec."""
        self.limit = route.worker_threads
        self.queue_max = route.max_queue_size
        qps = route.instance_rate_limit
        if qps <= 0:
            self.bucket = None
        elif self.bucket is None:
            self.bucket = TokenBucket(qps)
        else:
            self.bucket.set_rate(qps)


class RouteEntry:
    """A service as the hot path sees it: the snapshot's route plus live upstream states."""

    __slots__ = (
        "hold",
        "instance_qps",
        "limits",
        "mirror",
        "name",
        "route",
        "rr",
        "status",
        "timeout_s",
        "token",
        "upstreams",
    )

    def __init__(
        self, route: ServiceRoute, upstreams: list[UpstreamState], limits: ServiceLimits | None = None
    ) -> None:
        self.route = route
        self.name = route.name
        self.token = route.token
        self.timeout_s = route.timeout_s
        self.status = route.status
        self.upstreams = upstreams
        self.limits = limits  # None when no service / group / concurrency limit applies
        self.instance_qps = route.instance_rate_limit
        self.rr = 0
        self.hold = route.scale_from_zero  # no instance: wait for one (app.Gateway.hold)
        self.mirror: ServiceMirror | None = None  # set by the gateway when the spec mirrors


class GroupEntry:
    """A group path as the hot path sees it: `/api/predict/<G>` (member None: pick by weight) or
    `/api/predict/<G>.<service>` (member: that service, which its own token also opens)."""

    __slots__ = ("member", "name", "rr", "token")

    def __init__(
        self, name: str, token: bytes, rr: SmoothWeightedRR[RouteEntry], member: RouteEntry | None = None
    ) -> None:
        self.name = name
        self.token = token
        self.rr = rr
        self.member = member

    def pick(self) -> RouteEntry | None:
        """The member this request goes to; None: no member takes group traffic now."""
        member = self.member
        return member if member is not None else self.rr.pick()


def pick(entry: RouteEntry, now: float, tried: list[UpstreamState] | None) -> UpstreamState | None:
    """The upstream with the fewest requests in flight, not yet tried for this request.

    Instances marked down in the last second are only chosen when no other is left. Among
    equals, the scan starts one further each call, which makes ties round-robin.
    """
    ups = entry.upstreams
    n = len(ups)
    if n == 1:
        only = ups[0]
        return None if tried and only in tried else only
    if n == 0:
        return None
    start = entry.rr
    entry.rr = start + 1 if start + 1 < n else 0
    best: UpstreamState | None = None
    best_key = 0
    for i in range(n):
        j = start + i
        state = ups[j - n if j >= n else j]
        if tried and state in tried:
            continue
        key = state.outstanding
        if state.down_until > now:
            key += DOWN_PENALTY
        if best is None or key < best_key:
            best = state
            best_key = key
    return best
