"""Gateway metrics: per-service counters of one gateway process, and their two renderings.

Counting is on the hot path and costs a few int/list updates once per request, when it is
logged (`Gateway.log_exchange`); nothing is formatted until a scrape. The counters are plain
Python objects owned by the `Gateway` (no module state, no locks: one event loop writes them).

- `Histogram`: fixed buckets (seconds), non-cumulative counts plus a sum.
- `ServiceStats`: everything counted for one service (requests by code, three latency
  histograms, bytes, rejections by reason, in-flight).
- `GatewayMetrics`: the services' stats by name; requests to a name that is not a service on this
  gateway are all counted under service "-" (no label per unknown name).
- `GatewayCollector`: the prometheus-client collector that turns a `Snapshot` of the counters
  into metric families at scrape time (as control/metrics.py does); `render_prometheus` writes
  them in the text exposition (format 0.0.4). `stats_json`: the `/stats` JSON.

The listener that serves them is `metrics_server.py`.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class CountedRequest(Protocol):
    """What is counted of a finished request (`exchange.Exchange`)."""

    status: int
    t_start: float  # perf_counter() at the first byte of its head
    t_sent: float  # first sent to an instance (0.0: never)
    t_resp: float  # the instance's response complete (0.0: not)
    body_in: int
    bytes_out: int
    own_answer: bool  # answered by the gateway itself


# upper bounds in seconds; +Inf is implied (the last count)
BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
UNKNOWN_SERVICE = "-"  # every request whose path names no service here

# why the gateway answered a request itself (an error status it wrote, not the instance's)
REJECT_REASONS: dict[int, str] = {
    400: "bad_request",
    401: "auth",
    403: "acl",
    404: "not_found",
    405: "method",
    408: "timeout",
    413: "size",
    414: "head_too_large",
    417: "bad_request",
    429: "rate",
    431: "head_too_large",
    450: "queue",
    500: "internal",
    501: "bad_request",
    502: "bad_response",
    503: "unavailable",
    504: "timeout",
}


class Histogram:
    """Latencies in seconds: `counts[i]` is the number of values in (BUCKETS[i-1], BUCKETS[i]]."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def to_json(self) -> dict[str, object]:
        return {"sum": self.sum, "counts": list(self.counts)}


class ServiceStats:
    """The counters of one service in one gateway process."""

    __slots__ = ("bytes_in", "bytes_out", "codes", "duration", "in_flight", "own", "rejected", "upstream")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.duration = Histogram()  # first byte of the request head -> response complete
        self.upstream = Histogram()  # request sent to the instance -> response complete
        self.own = Histogram()  # duration - upstream: the gateway's own share (and the client's)
        self.in_flight = 0  # routed and authorized, not finished
        self.bytes_in = 0  # request body bytes received
        self.bytes_out = 0  # response body bytes relayed from instances
        self.rejected: dict[str, int] = {}

    @property
    def requests(self) -> int:
        return sum(self.codes.values())


@dataclass(frozen=True, slots=True)
class ServiceGauges:
    """What a scrape reads from the gateway's current state (not counted here)."""

    ready: int  # ready instances in the routing snapshot
    waiting: int  # requests held waiting for an instance (scale from zero)


class GatewayMetrics:
    """The counters of one gateway process, by service name."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceStats] = {}

    def service(self, name: str) -> ServiceStats:
        stats = self.services.get(name)
        if stats is None:
            stats = self.services[name] = ServiceStats()
        return stats

    def begin(self, name: str) -> ServiceStats:
        """A request of service `name` was routed and authorized: in flight until `record`."""
        stats = self.service(name)
        stats.in_flight += 1
        return stats

    def record(self, ex: CountedRequest, stats: ServiceStats, now: float) -> None:
        """`ex` is finished (`now`: perf_counter); `stats` is its service's (or "-").

        Once per request: the histogram updates are inlined (a method call each costs more
        than the update itself)."""
        status = ex.status
        codes = stats.codes
        codes[status] = codes.get(status, 0) + 1
        total = now - ex.t_start
        h = stats.duration
        h.counts[bisect_left(BUCKETS, total)] += 1
        h.sum += total
        sent = ex.t_sent
        if sent:
            upstream = (ex.t_resp or now) - sent
            h = stats.upstream
            h.counts[bisect_left(BUCKETS, upstream)] += 1
            h.sum += upstream
            total -= upstream
        h = stats.own
        h.counts[bisect_left(BUCKETS, total)] += 1
        h.sum += total
        stats.bytes_in += ex.body_in
        stats.bytes_out += ex.bytes_out
        if ex.own_answer:
            reason = REJECT_REASONS.get(status)
            if reason is not None:
                rejected = stats.rejected
                rejected[reason] = rejected.get(reason, 0) + 1


# == renderings (at scrape time) ==========================================================


@dataclass
class Snapshot:
    """What one scrape shows: the counters plus the gauges read from the gateway."""

    gateway: str
    pid: int
    started: float
    services: Mapping[str, ServiceStats]
    gauges: Mapping[str, ServiceGauges] = field(default_factory=dict)
    mirror: Mapping[str, int] = field(default_factory=dict)  # mirrored copies by result
    # --redis-url: up (0/1), fallbacks, outages, live (gateway processes); empty without it
    redis: Mapping[str, int] = field(default_factory=dict)
    connections: Mapping[str, int] = field(default_factory=dict)  # refused / cut by a bound (bounds.py)
    # the store as the snapshot watcher sees it (store_health.py): up, failures, outages, last_ok
    store: Mapping[str, float] = field(default_factory=dict)
    access_log: Mapping[str, int] = field(default_factory=dict)  # with --access-log: dropped lines


def stats_json(snap: Snapshot) -> bytes:
    """The `/stats` document (counters cumulative since the process started)."""
    services: dict[str, object] = {}
    for name in _names(snap):
        st = snap.services.get(name) or ServiceStats()
        g = snap.gauges.get(name) or ServiceGauges(0, 0)
        services[name] = {
            "requests": st.requests,
            "codes": {str(code): n for code, n in sorted(st.codes.items())},
            "in_flight": st.in_flight,
            "waiting": g.waiting,
            "ready": g.ready,
            "duration": st.duration.to_json(),
            "upstream": st.upstream.to_json(),
            "gateway": st.own.to_json(),
            "bytes_in": st.bytes_in,
            "bytes_out": st.bytes_out,
            "rejected": dict(sorted(st.rejected.items())),
        }
    doc = {
        "gateway": snap.gateway,
        "pid": snap.pid,
        "started": snap.started,
        "buckets": list(BUCKETS),
        "services": services,
        "mirror": dict(snap.mirror),
        "redis": dict(snap.redis),
        "store": dict(snap.store),  # up, failures, outages, last_ok (store_health.py)
        "access_log": dict(snap.access_log),  # dropped (lines lost to a full disk)
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _names(snap: Snapshot) -> list[str]:
    return sorted(set(snap.services) | set(snap.gauges))


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


_LE = [_num(b) for b in BUCKETS] + ["+Inf"]

_HISTOGRAMS: tuple[tuple[str, str, Callable[[ServiceStats], Histogram]], ...] = (
    (
        "openeas_gateway_request_duration_seconds",
        "Time from the first byte of the request to the end of the response.",
        lambda s: s.duration,
    ),
    (
        "openeas_gateway_upstream_duration_seconds",
        "Time from sending the request to an instance until its response is complete "
        "(requests that reached an instance only).",
        lambda s: s.upstream,
    ),
    (
        "openeas_gateway_own_duration_seconds",
        "Request duration minus upstream duration: time spent in the gateway (and on the client).",
        lambda s: s.own,
    ),
)


class GatewayCollector(Collector):
    """The gateway's metric families, built from its counters at scrape time.

    `snapshot` is called once per scrape (`Gateway.metrics_snapshot`); the hot path never touches
    prometheus-client objects."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        return iter(families(self.snapshot()))


# shared limits (--redis-url, docs/gateway.md "Shared limits"): Snapshot.redis key, family, name, help
_REDIS_FAMILIES: tuple[tuple[str, type[GaugeMetricFamily] | type[CounterMetricFamily], str, str], ...] = (
    (
        "up",
        GaugeMetricFamily,
        "openeas_gateway_redis_up",
        "1 while shared limits are counted in Redis, 0 while local.",
    ),
    (
        "fallbacks",
        CounterMetricFamily,
        "openeas_gateway_limit_fallbacks_total",
        "Requests whose shared limit was decided locally because Redis was unreachable.",
    ),
    (
        "outages",
        CounterMetricFamily,
        "openeas_gateway_redis_outages_total",
        "Times Redis was found unreachable.",
    ),
    (
        "live",
        GaugeMetricFamily,
        "openeas_gateway_live_processes",
        "Gateway processes seen in Redis in the last 3 s.",
    ),
)


# the store as the gateway's snapshot watcher reads it (store_health.py; docs/security.md)
_STORE_FAMILIES: tuple[tuple[str, type[GaugeMetricFamily] | type[CounterMetricFamily], str, str], ...] = (
    (
        "up",
        GaugeMetricFamily,
        "openeas_gateway_store_up",
        "1 while the store can be read; 0: serving the last snapshot.",
    ),
    (
        "failures",
        CounterMetricFamily,
        "openeas_gateway_store_failures_total",
        "Reads of the store that failed (locked, unreachable, missing or corrupt).",
    ),
    (
        "outages",
        CounterMetricFamily,
        "openeas_gateway_store_outages_total",
        "Times the store became unreadable.",
    ),
    (
        "last_ok",
        GaugeMetricFamily,
        "openeas_gateway_store_last_ok_seconds",
        "Unix time of the last good read of the store.",
    ),
)


def families(snap: Snapshot) -> list[Metric]:
    """The metric families of one scrape (docs/metrics.md lists them)."""
    names = _names(snap)
    empty = ServiceStats()
    stats = [(n, snap.services.get(n) or empty) for n in names]
    out: list[Metric] = []

    info = GaugeMetricFamily(
        "openeas_gateway_info", "This gateway process (value 1).", labels=["gateway", "pid"]
    )
    info.add_metric([snap.gateway, str(snap.pid)], 1)
    out.append(info)
    out.append(
        GaugeMetricFamily(
            "openeas_gateway_start_time_seconds", "Unix time the gateway process started.", value=snap.started
        )
    )

    requests = CounterMetricFamily(
        "openeas_gateway_requests_total",
        'Finished requests by service and status code (service "-": no such service here).',
        labels=["service", "code", "class"],
    )
    for name, st in stats:
        for code, n in sorted(st.codes.items()):
            requests.add_metric([name, str(code), f"{code // 100}xx"], n)
    out.append(requests)

    for metric, help_text, pick in _HISTOGRAMS:
        hist = HistogramMetricFamily(metric, help_text, labels=["service"])
        for name, st in stats:
            h = pick(st)
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(_LE, h.counts, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            hist.add_metric([name], buckets, h.sum)
        out.append(hist)

    conns = CounterMetricFamily(
        "openeas_gateway_connections_closed_total",
        "Client connections refused at accept or cut by a bound (bounds.py), by reason.",
        labels=["reason"],
    )
    for reason, n in sorted(snap.connections.items()):
        conns.add_metric([reason], n)
    out.append(conns)

    gauges = snap.gauges

    def per_service(
        family: GaugeMetricFamily | CounterMetricFamily, value: Callable[[str, ServiceStats], int]
    ) -> None:
        for name, st in stats:
            family.add_metric([name], value(name, st))
        out.append(family)

    per_service(
        GaugeMetricFamily(
            "openeas_gateway_in_flight",
            "Requests routed to the service and not finished yet (queued at an instance included).",
            labels=["service"],
        ),
        lambda _n, s: s.in_flight,
    )
    per_service(
        GaugeMetricFamily(
            "openeas_gateway_waiting",
            "Requests held waiting for an instance of the service (scale from zero).",
            labels=["service"],
        ),
        lambda n, _s: gauges[n].waiting if n in gauges else 0,
    )
    per_service(
        GaugeMetricFamily(
            "openeas_gateway_upstreams_ready",
            "Ready instances of the service in the gateway's current routing snapshot.",
            labels=["service"],
        ),
        lambda n, _s: gauges[n].ready if n in gauges else 0,
    )
    per_service(
        CounterMetricFamily(
            "openeas_gateway_request_bytes_total",
            "Request body bytes received from clients.",
            labels=["service"],
        ),
        lambda _n, s: s.bytes_in,
    )
    per_service(
        CounterMetricFamily(
            "openeas_gateway_response_bytes_total",
            "Response body bytes relayed from instances to clients.",
            labels=["service"],
        ),
        lambda _n, s: s.bytes_out,
    )
    rejected = CounterMetricFamily(
        "openeas_gateway_rejected_total",
        "Requests the gateway answered itself with an error, by reason "
        "(auth, acl, size, rate, queue, timeout, method, not_found, unavailable, bad_request, internal).",
        labels=["service", "reason"],
    )
    for name, st in stats:
        for reason, n in sorted(st.rejected.items()):
            rejected.add_metric([name, reason], n)
    out.append(rejected)
    mirror = CounterMetricFamily(
        "openeas_gateway_mirror_copies_total",
        "Mirrored request copies by result (sent, dropped, failed, incomplete); see docs/traffic.md.",
        labels=["result"],
    )
    for result, n in sorted(snap.mirror.items()):
        mirror.add_metric([result], n)
    out.append(mirror)
    for key, family, metric, help_text in _REDIS_FAMILIES if snap.redis else ():
        out.append(family(metric, help_text, value=snap.redis.get(key, 0)))
    for key, family, metric, help_text in _STORE_FAMILIES if snap.store else ():
        out.append(family(metric, help_text, value=snap.store.get(key, 0)))
    if snap.access_log:
        out.append(
            CounterMetricFamily(
                "openeas_gateway_access_log_dropped_lines_total",
                "Access log lines lost because the log could not be written (a full disk).",
                value=snap.access_log.get("dropped", 0),
            )
        )
    return out


def prometheus_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of one gateway process holding its collector (one per `Gateway`, no global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(snapshot))
    return registry


def render_prometheus(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition format 0.0.4 of `registry`."""
    return generate_latest(registry)
