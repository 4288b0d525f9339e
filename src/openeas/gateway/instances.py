"""The live state of one instance as the gateway sees it: load, limits, queue, pool (no I/O).

An `UpstreamState` lives as long as its instance is in the routing snapshot: it carries the
count of requests assigned to it (in flight and waiting in its queue), a short local "down" mark
after a refused connection, the pool of idle keep-alive connections to it (see `upstream.py`), and
its limits: at most `limit` requests in flight (metadata.rpc.worker_threads), at most `queue_max`
more waiting in `waiting` (metadata.rpc.max_queue_size), and an optional QPS bucket
(metadata.rpc.rate_limit).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from openeas.gateway.limits import RateBucket, SharedRate, TokenBucket, keep_bucket
from openeas.gateway.snapshot import DEFAULT_MAX_QUEUE_SIZE, DEFAULT_WORKER_THREADS, ServiceRoute, Upstream
from openeas.gateway.upstream import UpstreamConnection

DOWN_FOR_S = 1.0


class Waiter(Protocol):
    """A request waiting in an instance's queue (`exchange.Exchange`)."""

    queued: bool

    def dispatch(self, state: UpstreamState, now: float) -> None:
        """A slot of `state` is this request's now: send it."""

    def reroute(self) -> None:
        """Its instance left the snapshot: pick again in the gateway's current routes (or answer)."""


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
        "shared_bucket",
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
        self.waiting: deque[Waiter] = deque()  # FIFO of requests waiting for a free slot
        self.bucket: RateBucket | None = None
        self.shared_bucket: SharedRate | None = None  # with --redis-url: `bucket`, counted in Redis
        self.down_until = 0.0
        self.idle: list[UpstreamConnection] = []  # LIFO: the most recently used is on top
        self.retired = False  # no longer in the snapshot: its connections are not pooled again

    def mark_down(self, now: float) -> None:
        self.down_until = now + DOWN_FOR_S

    def configure(self, route: ServiceRoute, shared: SharedRate | None = None) -> None:
        """Take the instance limits of the service's current spec (`shared`: with --redis-url,
        its QPS bucket counted in Redis)."""
        self.limit = route.worker_threads
        self.queue_max = route.max_queue_size
        self.shared_bucket = shared
        if shared is not None:
            self.bucket = shared
        else:
            old = self.bucket if isinstance(self.bucket, TokenBucket) else None
            self.bucket = keep_bucket(old, route.instance_rate_limit)


def drain_queue(state: UpstreamState, now: float) -> None:
    """Send waiting requests to the instance while it has free slots (FIFO)."""
    waiting = state.waiting
    while waiting and state.active < state.limit:
        ex = waiting.popleft()
        ex.queued = False
        state.active += 1
        ex.dispatch(state, now)
