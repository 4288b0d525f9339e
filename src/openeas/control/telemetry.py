"""Request telemetry of the gateways, as the control plane sees it (docs/metrics.md).

Every `interval_s` the control plane reads the `/stats` JSON of every gateway process (counters
cumulative since that process started, see `gateway`'s metrics) and turns the counter deltas
between two reads into per-service samples, kept in a ring of `retention_s` per service. From
them:

- `Telemetry.load(service, window_s)`: what the autoscaler reads (QPS, requests in flight,
  requests waiting for an instance, when a request was last seen);
- `Telemetry.series(service, window_s)`: the points the web console draws (QPS, rates by status
  class and code, latency p50/p99 from the histogram bucket deltas, mean times);
- `Telemetry.on_waiting(callback)`: called with a service name when a read shows requests
  waiting for an instance (scale from zero does not wait for the autoscaler's next tick).

A gateway process that restarted (another pid or start time, or a counter that went down) starts
from zero: its counters are taken whole as the delta, as Prometheus' rate() does. A gateway that
does not answer is skipped (its next answer's delta covers the gap). Reads are concurrent, with
a short timeout, so a stuck gateway cannot hold the event loop's other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger("openeas.control")


class StatsError(ValueError):
    """A /stats payload that does not follow the contract."""


# -- one gateway process's counters -----------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    sum: float
    counts: tuple[int, ...]  # NON-cumulative, one per bucket plus +Inf

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class ServiceCounters:
    requests: int
    codes: Mapping[str, int]
    in_flight: int
    waiting: int
    duration: Histogram  # request head in -> response out
    upstream: Histogram  # request sent to the instance -> its response complete
    own: Histogram  # the gateway's own share (`gateway` in /stats; older gateways: absent)
    bytes_in: int
    bytes_out: int
    rejected: Mapping[str, int]


@dataclass(frozen=True)
class GatewayStats:
    gateway: str
    pid: int
    started: float
    buckets: tuple[float, ...]
    services: Mapping[str, ServiceCounters]


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise StatsError(f"{where}: expected a non-negative number, got {value!r}")
    return int(value)


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StatsError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _counts(value: Any, where: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StatsError(f"{where}: expected an object")
    return {str(k): _int(v, f"{where}.{k}") for k, v in value.items()}


def _histogram(value: Any, nbuckets: int, where: str) -> Histogram:
    if value is None:
        return Histogram(0.0, (0,) * (nbuckets + 1))
    if not isinstance(value, dict) or not isinstance(value.get("counts"), list):
        raise StatsError(f"{where}: expected {{'sum': s, 'counts': [...]}}")
    counts = tuple(_int(c, f"{where}.counts") for c in value["counts"])
    if len(counts) != nbuckets + 1:
        raise StatsError(f"{where}.counts: expected {nbuckets + 1} counts (buckets + Inf), got {len(counts)}")
    return Histogram(_float(value.get("sum", 0.0), f"{where}.sum"), counts)


def parse_stats(payload: Any) -> GatewayStats:
    """A gateway's /stats JSON -> GatewayStats; StatsError names what does not fit."""
    if not isinstance(payload, dict):
        raise StatsError("the stats are not a JSON object")
    raw_buckets = payload.get("buckets")
    if not isinstance(raw_buckets, list) or not raw_buckets:
        raise StatsError("buckets: expected a list of upper bounds")
    buckets = tuple(_float(b, "buckets") for b in raw_buckets)
    if any(b >= a for b, a in itertools.pairwise(buckets)):
        raise StatsError("buckets: expected increasing upper bounds")
    raw_services = payload.get("services", {})
    if not isinstance(raw_services, dict):
        raise StatsError("services: expected an object")
    services = {}
    for name, s in raw_services.items():
        where = f"services.{name}"
        if not isinstance(s, dict):
            raise StatsError(f"{where}: expected an object")
        services[str(name)] = ServiceCounters(
            requests=_int(s.get("requests", 0), f"{where}.requests"),
            codes=_counts(s.get("codes"), f"{where}.codes"),
            in_flight=_int(s.get("in_flight", 0), f"{where}.in_flight"),
            waiting=_int(s.get("waiting", 0), f"{where}.waiting"),
            duration=_histogram(s.get("duration"), len(buckets), f"{where}.duration"),
            upstream=_histogram(s.get("upstream"), len(buckets), f"{where}.upstream"),
            own=_histogram(s.get("gateway"), len(buckets), f"{where}.gateway"),
            bytes_in=_int(s.get("bytes_in", 0), f"{where}.bytes_in"),
            bytes_out=_int(s.get("bytes_out", 0), f"{where}.bytes_out"),
            rejected=_counts(s.get("rejected"), f"{where}.rejected"),
        )
    return GatewayStats(
        gateway=str(payload.get("gateway", "")),
        pid=_int(payload.get("pid", 0), "pid"),
        started=_float(payload.get("started", 0.0), "started"),
        buckets=buckets,
        services=services,
    )


# -- deltas between two reads -------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """What happened to one service at one gateway between two reads (gauges: at the second)."""

    requests: int
    codes: Mapping[str, int]
    duration: Histogram
    upstream: Histogram
    own: Histogram
    bytes_in: int
    bytes_out: int
    rejected: Mapping[str, int]
    in_flight: int
    waiting: int


def _sub_counts(cur: Mapping[str, int], prev: Mapping[str, int]) -> dict[str, int] | None:
    out = {}
    for key, value in cur.items():
        d = value - prev.get(key, 0)
        if d < 0:
            return None
        if d:
            out[key] = d
    if any(key not in cur for key in prev):
        return None  # a code that disappeared: the counters were reset
    return out


def _sub_hist(cur: Histogram, prev: Histogram) -> Histogram | None:
    counts = tuple(c - p for c, p in zip(cur.counts, prev.counts, strict=True))
    if any(c < 0 for c in counts) or cur.sum < prev.sum - 1e-9:
        return None
    return Histogram(max(cur.sum - prev.sum, 0.0), counts)


def _whole(cur: ServiceCounters) -> Delta:
    return Delta(
        requests=cur.requests,
        codes={k: v for k, v in cur.codes.items() if v},
        duration=cur.duration,
        upstream=cur.upstream,
        own=cur.own,
        bytes_in=cur.bytes_in,
        bytes_out=cur.bytes_out,
        rejected={k: v for k, v in cur.rejected.items() if v},
        in_flight=cur.in_flight,
        waiting=cur.waiting,
    )


def service_delta(cur: ServiceCounters, prev: ServiceCounters | None) -> Delta:
    """The delta of one service's counters; a counter that went down means a reset (whole)."""
    if prev is None:
        return _whole(cur)
    codes = _sub_counts(cur.codes, prev.codes)
    rejected = _sub_counts(cur.rejected, prev.rejected)
    duration = _sub_hist(cur.duration, prev.duration)
    upstream = _sub_hist(cur.upstream, prev.upstream)
    own = _sub_hist(cur.own, prev.own)
    requests = cur.requests - prev.requests
    bytes_in = cur.bytes_in - prev.bytes_in
    bytes_out = cur.bytes_out - prev.bytes_out
    if (
        codes is None
        or rejected is None
        or duration is None
        or upstream is None
        or own is None
        or min(requests, bytes_in, bytes_out) < 0
    ):
        return _whole(cur)
    return Delta(
        requests, codes, duration, upstream, own, bytes_in, bytes_out, rejected, cur.in_flight, cur.waiting
    )


def gateway_deltas(
    cur: GatewayStats, prev: GatewayStats | None, *, new_process: bool = False
) -> dict[str, Delta]:
    """Per-service deltas between two reads of the same gateway address.

    Another process since `prev` (pid, start time or buckets changed): its counters are new, taken
    whole. No `prev` (the first read of an address): the counters are taken whole only when the
    caller knows the process started after it began watching (`new_process`); otherwise what
    they hold happened before we looked, and only the gauges count.
    """
    if prev is None and not new_process:
        zero = _zero(cur.buckets)
        return {name: Delta(0, {}, zero, zero, zero, 0, 0, {}, s.in_flight, s.waiting)
                for name, s in cur.services.items()}  # fmt: skip
    restarted = prev is None or (cur.pid, cur.started, cur.buckets) != (prev.pid, prev.started, prev.buckets)
    return {
        name: service_delta(s, None if restarted or prev is None else prev.services.get(name))
        for name, s in cur.services.items()
    }


def _zero(buckets: Sequence[float]) -> Histogram:
    return Histogram(0.0, (0,) * (len(buckets) + 1))


# -- samples, windows and percentiles ----------------------------------------------------------


@dataclass
class Sample:
    """One service at one read, summed over the gateways: counter deltas over `dt` seconds."""

    t: float  # unix time of the read
    dt: float  # seconds the deltas cover
    buckets: tuple[float, ...]
    requests: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    duration_sum: float = 0.0
    duration_counts: list[int] = field(default_factory=list)
    upstream_sum: float = 0.0
    upstream_counts: list[int] = field(default_factory=list)
    own_sum: float = 0.0
    own_count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    waiting: int = 0

    def __post_init__(self) -> None:
        n = len(self.buckets) + 1
        self.duration_counts = self.duration_counts or [0] * n
        self.upstream_counts = self.upstream_counts or [0] * n

    def add(self, d: Delta, buckets: tuple[float, ...]) -> None:
        self.requests += d.requests
        _add_counts(self.codes, d.codes)
        _add_counts(self.rejected, d.rejected)
        self.bytes_in += d.bytes_in
        self.bytes_out += d.bytes_out
        self.in_flight += d.in_flight
        self.waiting += d.waiting
        if buckets == self.buckets:  # gateways of one version share the buckets
            self.duration_sum += d.duration.sum
            self.upstream_sum += d.upstream.sum
            self.own_sum += d.own.sum
            self.own_count += d.own.count
            for i, c in enumerate(d.duration.counts):
                self.duration_counts[i] += c
            for i, c in enumerate(d.upstream.counts):
                self.upstream_counts[i] += c

    def merge(self, other: Sample) -> None:
        """Fold a later sample into this one (downsampling); gauges: the mean, kept by weight."""
        total = self.dt + other.dt
        if total > 0:
            self.in_flight = round((self.in_flight * self.dt + other.in_flight * other.dt) / total)
        self.waiting = other.waiting
        self.t, self.dt = other.t, total
        self.requests += other.requests
        _add_counts(self.codes, other.codes)
        _add_counts(self.rejected, other.rejected)
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        if other.buckets == self.buckets:
            self.duration_sum += other.duration_sum
            self.upstream_sum += other.upstream_sum
            self.own_sum += other.own_sum
            self.own_count += other.own_count
            self.duration_counts = [
                a + b for a, b in zip(self.duration_counts, other.duration_counts, strict=True)
            ]
            self.upstream_counts = [
                a + b for a, b in zip(self.upstream_counts, other.upstream_counts, strict=True)
            ]


def _add_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


def quantile(q: float, buckets: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile of a histogram (non-cumulative counts, last one +Inf), interpolated
    linearly inside its bucket as Prometheus' histogram_quantile does; None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i >= len(buckets):  # in +Inf: the highest finite bound is all we know
                return float(buckets[-1])
            lower = buckets[i - 1] if i > 0 else 0.0
            return float(lower + (buckets[i] - lower) * (rank - seen) / c)
        seen += c
    return float(buckets[-1])


def status_class(code: str) -> str:
    return f"{code[0]}xx" if len(code) == 3 and code[0] in "12345" else "other"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def point(s: Sample) -> dict[str, Any]:
    """A console chart point: rates per second over the sample, times in milliseconds."""
    dt = s.dt if s.dt > 0 else 1.0
    classes: dict[str, float] = {"2xx": 0.0, "4xx": 0.0, "5xx": 0.0}
    for code, n in s.codes.items():
        cls = status_class(code)
        classes[cls] = classes.get(cls, 0.0) + n / dt
    dcount, ucount = sum(s.duration_counts), sum(s.upstream_counts)
    if s.own_count:
        own: float | None = s.own_sum / s.own_count
    else:  # a gateway without the `gateway` histogram: the difference of the means
        own = max(s.duration_sum / dcount - s.upstream_sum / ucount, 0.0) if dcount and ucount else None
    return {
        "t": round(s.t, 3),
        "dt": round(s.dt, 3),
        "requests": s.requests,
        "qps": round(s.requests / dt, 3),
        "classes": {k: round(v, 3) for k, v in classes.items()},
        "codes": {k: round(v / dt, 3) for k, v in sorted(s.codes.items())},
        "p50_ms": _ms(quantile(0.5, s.buckets, s.duration_counts)),
        "p99_ms": _ms(quantile(0.99, s.buckets, s.duration_counts)),
        "mean_ms": _ms(s.duration_sum / dcount) if dcount else None,  # as callers saw it, at the gateway
        "upstream_ms": _ms(s.upstream_sum / ucount) if ucount else None,  # the instance's share
        "gateway_ms": _ms(own),  # the gateway's own share
        "in_flight": s.in_flight,
        "waiting": s.waiting,
    }


@dataclass(frozen=True)
class ServiceLoad:
    qps: float  # finished requests/s over the window, all gateways summed
    in_flight: float  # mean requests in flight over the window, all gateways summed
    waiting: int  # requests held waiting for an instance (scale from zero), last read
    last_request_at: float | None  # unix time a request for the service was last seen


def load_of(
    samples: Iterable[Sample], now: float, window_s: float, last_request_at: float | None
) -> ServiceLoad:
    inside = [s for s in samples if s.t > now - window_s]
    if not inside:
        return ServiceLoad(0.0, 0.0, 0, last_request_at)
    span = sum(s.dt for s in inside)
    requests = sum(s.requests for s in inside)
    flight = sum(s.in_flight * s.dt for s in inside)
    return ServiceLoad(
        qps=requests / span if span > 0 else 0.0,
        in_flight=flight / span if span > 0 else float(inside[-1].in_flight),
        waiting=inside[-1].waiting,
        last_request_at=last_request_at,
    )


def downsample(samples: Sequence[Sample], max_points: int) -> list[Sample]:
    """At most `max_points` samples, each folding consecutive ones (for long windows)."""
    if len(samples) <= max_points:
        return [replace_sample(s) for s in samples]
    step = math.ceil(len(samples) / max_points)
    out = []
    for i in range(0, len(samples), step):
        acc = replace_sample(samples[i])
        for s in samples[i + 1 : i + step]:
            acc.merge(s)
        out.append(acc)
    return out


def replace_sample(s: Sample) -> Sample:
    """A copy that merging can change without touching the ring."""
    return dataclasses.replace(
        s,
        codes=dict(s.codes),
        rejected=dict(s.rejected),
        duration_counts=list(s.duration_counts),
        upstream_counts=list(s.upstream_counts),
    )


# -- the scraper -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetrySettings:
    interval_s: float = 1.0
    timeout_s: float = 0.8  # per read; a gateway slower than this is skipped for the round
    retention_s: float = 600.0  # samples kept per service
    max_points: int = 300  # points `series` returns at most


def stats_url(address: str) -> str:
    return address if "://" in address else f"http://{address}/stats"


class Telemetry:
    """Reads the gateways' /stats every `interval_s`; `run()` is its task."""

    def __init__(
        self,
        addresses: Callable[[], Iterable[str]],
        settings: TelemetrySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.addresses = addresses
        self.settings = settings or TelemetrySettings()
        self.clock = clock
        self._prev: dict[str, GatewayStats] = {}  # by address
        self._ring: dict[str, deque[Sample]] = {}  # by service
        self._last_seen: dict[str, float] = {}  # service -> unix time a request was last seen
        self._last_round: float | None = None
        self._born = clock()  # a gateway process started after this has counted nothing we saw
        self._waiting_callbacks: list[Callable[[str], None]] = []
        self._stopping = asyncio.Event()
        self.rounds = 0
        self.errors = 0  # reads that failed (gateway down, bad payload), since start
        self.gateways_read = 0  # addresses that answered in the last round

    # -- the interface -----------------------------------------------------------------------
    def load(self, service: str, window_s: float) -> ServiceLoad:
        return load_of(self._ring.get(service, ()), self.clock(), window_s, self._last_seen.get(service))

    def series(self, service: str, window_s: float) -> list[dict[str, Any]]:
        now = self.clock()
        inside = [s for s in self._ring.get(service, ()) if s.t > now - window_s]
        return [point(s) for s in downsample(inside, self.settings.max_points)]

    def on_waiting(self, callback: Callable[[str], None]) -> None:
        self._waiting_callbacks.append(callback)

    def services(self) -> list[str]:
        return sorted(self._ring)

    # -- reading -----------------------------------------------------------------------------
    def ingest(
        self, reads: Mapping[str, GatewayStats], now: float, dt: float, live: Iterable[str] = ()
    ) -> None:
        """One round: the stats read from each address that answered, `live` the addresses
        listed this round (no I/O here; the unit tests drive it)."""
        live = frozenset(live)
        samples: dict[str, Sample] = {}
        for address, stats in reads.items():
            prev = self._prev.get(address)
            # a process started after we began watching (a restart on a new port, a new gateway):
            # everything it counted is news, even what came before our first read of it
            new_process = stats.started >= self._born
            for name, delta in gateway_deltas(stats, prev, new_process=new_process).items():
                sample = samples.get(name)
                if sample is None:
                    sample = samples[name] = Sample(now, dt, stats.buckets)
                sample.add(delta, stats.buckets)
            self._prev[address] = stats
        keep = max(1, math.ceil(self.settings.retention_s / max(self.settings.interval_s, 0.01)))
        for name, sample in samples.items():
            ring = self._ring.get(name)
            if ring is None:
                ring = self._ring[name] = deque(maxlen=keep)
            ring.append(sample)
            if sample.requests or sample.in_flight or sample.waiting:
                self._last_seen[name] = now
        # Forget addresses no longer listed (a down gateway that is still listed keeps its last read).
        for address in [a for a in self._prev if a not in reads and a not in live]:
            del self._prev[address]
        for name in [n for n, r in self._ring.items() if not r or r[-1].t < now - self.settings.retention_s]:
            del self._ring[name]
        for name in [n for n, t in self._last_seen.items() if t < now - 86400]:
            del self._last_seen[name]
        for name, sample in samples.items():
            if sample.waiting > 0:
                for callback in self._waiting_callbacks:
                    try:
                        callback(name)
                    except Exception:
                        log.exception("telemetry: waiting callback failed for %s", name)

    async def _read(self, client: httpx.AsyncClient, address: str) -> GatewayStats | None:
        try:
            response = await client.get(stats_url(address))
            response.raise_for_status()
            return parse_stats(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self.errors += 1
            log.debug("telemetry: cannot read %s: %s", address, exc)
            return None

    async def scrape_once(self, client: httpx.AsyncClient) -> None:
        try:
            addresses = sorted(set(self.addresses()))
        except Exception:
            log.exception("telemetry: cannot list the gateway addresses")
            addresses = []
        results = await asyncio.gather(*(self._read(client, a) for a in addresses))
        reads = {a: r for a, r in zip(addresses, results, strict=True) if r is not None}
        now = self.clock()
        dt = now - self._last_round if self._last_round is not None else self.settings.interval_s
        self._last_round = now
        self.gateways_read = len(reads)
        self.ingest(reads, now, max(dt, 1e-3), addresses)
        self.rounds += 1

    async def run(self) -> None:
        s = self.settings
        timeout = httpx.Timeout(s.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    await self.scrape_once(client)
                except Exception:
                    log.exception("telemetry: a round failed")
                left = s.interval_s - (time.monotonic() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), max(left, 0.05))

    def stop(self) -> None:
        self._stopping.set()
