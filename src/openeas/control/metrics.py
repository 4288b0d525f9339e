"""The control plane's metrics (docs/metrics.md, "Control plane").

- `GET /metrics` (admin token: `Authorization: Bearer <token>`): Prometheus text from a per-app
  `CollectorRegistry` with one custom collector: services by status, instances per service by
  state and the desired count (from the store), gateway processes up / ready / starts (from the
  supervisors), request load per service from the telemetry, and the metrics of every ready
  instance of an `llm` service, fetched at scrape time (concurrently, short timeout) and re-emitted
  with `service` and `instance` labels (federation: one scrape config sees the LLM metrics).
- `GET /api/v2/services/{region}/{name}/metrics?window=300`: the telemetry series of a service as
  JSON, for the console's charts.

A scrape first gathers everything (store reads in a thread, instance fetches on the loop), then
renders it; one scrape at a time. Tokens are never labels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.errors import ApiError
from openeas.control.ops import ControlOps
from openeas.control.rest.inputs import PREFIX, RequestReader
from openeas.control.rest.routes import Endpoint
from openeas.control.telemetry import ServiceLoad, Telemetry
from openeas.store import InstanceRecord, ServiceRecord

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("Running", "Waiting", "Scaling", "Stopped", "Failed")  # EAS's, always present
INSTANCE_STATES = ("starting", "ready", "unready", "failed", "stopping")
FEDERATED_PROCESSORS = frozenset({"llm"})
FETCH_TIMEOUT_S = 2.0
LOAD_WINDOW_S = 60.0
DEFAULT_WINDOW_S = 300
RESERVED_LABELS = ("service", "instance")


@dataclass(frozen=True)
class GatewayState:
    name: str
    status: str
    up: bool
    ready: bool
    starts: int


@dataclass(frozen=True)
class Federated:
    service: str
    instance: str
    up: bool
    families: list[Metric]


@dataclass
class ScrapeView:
    """Everything one scrape renders, gathered before rendering."""

    services: list[ServiceRecord]
    instances: list[InstanceRecord]
    gateways: list[GatewayState]
    loads: dict[str, ServiceLoad] = field(default_factory=dict)
    telemetry: tuple[int, int, int] | None = None  # rounds, read errors, gateways read
    federated: list[Federated] = field(default_factory=list)


def processor_of(svc: ServiceRecord) -> str:
    value = svc.spec.get("processor")
    return value if isinstance(value, str) else ""


def instance_url(inst: InstanceRecord) -> str:
    host = inst.host if inst.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{inst.port}/metrics"


def parse_federated(service: str, instance: str, text: str) -> list[Metric]:
    """An instance's exposition -> families with `service` and `instance` labels added (a label
    of that name the instance set itself is kept as `exported_<name>`, as Prometheus does)."""
    out = []
    for family in text_string_to_metric_families(text):
        metric = Metric(family.name, family.documentation, family.type, family.unit)
        for s in family.samples:
            if s.name.endswith("_created"):
                continue  # creation times of the instance's series: noise once federated
            labels = {(f"exported_{k}" if k in RESERVED_LABELS else k): v for k, v in s.labels.items()}
            metric.add_sample(s.name, {"service": service, "instance": instance, **labels}, s.value)
        if metric.samples:
            out.append(metric)
    return out


def merge_families(fetched: list[Federated]) -> list[Metric]:
    """One family per name across instances (the exposition format wants each name once)."""
    merged: dict[str, Metric] = {}
    for f in fetched:
        for family in f.families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            elif into.type != family.type:
                continue  # two instances disagree on a type: keep the first
            into.samples.extend(family.samples)
    return list(merged.values())


class ControlCollector(Collector):
    """Renders the `ScrapeView` that `ControlMetrics.render` has just gathered."""

    def __init__(self) -> None:
        self.view: ScrapeView | None = None

    def collect(self) -> Iterator[Metric]:
        view = self.view
        if view is None:
            return
        by_status = {s: 0 for s in STATUSES}
        for svc in view.services:
            by_status[svc.status] = by_status.get(svc.status, 0) + 1
        services = GaugeMetricFamily("openeas_services", "Services by status", labels=["status"])
        for status, n in sorted(by_status.items()):
            services.add_metric([status], n)
        yield services

        info = GaugeMetricFamily(
            "openeas_service_info", "One per service: its status, gateway and processor",
            labels=["service", "status", "gateway", "processor"],
        )  # fmt: skip
        desired = GaugeMetricFamily(
            "openeas_service_instances_desired",
            "Instances the service asks for (metadata.instance; 0 when stopped)",
            labels=["service"],
        )
        states = GaugeMetricFamily(
            "openeas_service_instances", "Instances of a service by state", labels=["service", "state"]
        )
        restarts = GaugeMetricFamily(
            "openeas_service_instance_restarts",
            "Restarts of the service's current instances",
            labels=["service"],
        )
        for svc in view.services:
            info.add_metric([svc.name, svc.status, svc.gateway, processor_of(svc)], 1)
            want = svc.spec.get("metadata", {}).get("instance", 1)
            desired.add_metric([svc.name], float(want) if svc.desired == "running" else 0.0)
            mine = [i for i in view.instances if i.service == svc.name]
            counts = {s: 0 for s in INSTANCE_STATES}
            for inst in mine:
                counts[inst.state] = counts.get(inst.state, 0) + 1
            for state, n in sorted(counts.items()):
                states.add_metric([svc.name, state], n)
            restarts.add_metric([svc.name], sum(i.restarts for i in mine))
        yield from (info, desired, states, restarts)

        up = GaugeMetricFamily("openeas_gateway_up", "1 when the gateway's process runs", labels=["gateway"])
        ready = GaugeMetricFamily(
            "openeas_gateway_ready", "1 when the gateway's process is ready (listening)", labels=["gateway"]
        )
        gstatus = GaugeMetricFamily(
            "openeas_gateway_status", "1 for the gateway's current status", labels=["gateway", "status"]
        )
        starts = CounterMetricFamily(
            "openeas_gateway_process_starts",
            "Times the supervisor started the gateway's process",
            labels=["gateway"],
        )
        for g in view.gateways:
            up.add_metric([g.name], int(g.up))
            ready.add_metric([g.name], int(g.ready))
            gstatus.add_metric([g.name, g.status], 1)
            starts.add_metric([g.name], g.starts)
        yield from (up, ready, gstatus, starts)

        if view.telemetry is not None:
            rounds, errors, read = view.telemetry
            yield CounterMetricFamily(
                "openeas_telemetry_rounds", "Rounds of /stats reads since start", value=rounds
            )
            yield CounterMetricFamily(
                "openeas_telemetry_read_errors", "Gateway /stats reads that failed since start", value=errors
            )
            yield GaugeMetricFamily(
                "openeas_telemetry_gateways_read",
                "Gateway processes that answered the last round",
                value=read,
            )
            qps = GaugeMetricFamily(
                "openeas_service_qps",
                f"Finished requests/s over the last {LOAD_WINDOW_S:g} s",
                labels=["service"],
            )
            flight = GaugeMetricFamily(
                "openeas_service_in_flight",
                f"Mean requests in flight over {LOAD_WINDOW_S:g} s",
                labels=["service"],
            )
            waiting = GaugeMetricFamily(
                "openeas_service_waiting",
                "Requests waiting for an instance (scale from zero)",
                labels=["service"],
            )
            last = GaugeMetricFamily(
                "openeas_service_last_request_timestamp_seconds",
                "Unix time a request for the service was last seen",
                labels=["service"],
            )
            for name, load in sorted(view.loads.items()):
                qps.add_metric([name], round(load.qps, 6))
                flight.add_metric([name], round(load.in_flight, 6))
                waiting.add_metric([name], load.waiting)
                if load.last_request_at is not None:
                    last.add_metric([name], load.last_request_at)
            yield from (qps, flight, waiting, last)

        if view.federated:
            fup = GaugeMetricFamily(
                "openeas_instance_metrics_up",
                "1 when the instance's /metrics answered this scrape (federated processors)",
                labels=["service", "instance"],
            )
            for f in view.federated:
                fup.add_metric([f.service, f.instance], int(f.up))
            yield fup
            yield from merge_families(view.federated)


class ControlMetrics:
    """The control plane's metrics for one app: its registry, and the JSON series route."""

    def __init__(self, ops: ControlOps, reader: RequestReader, telemetry: Telemetry | None):
        self.ops = ops
        self.read = reader
        self.telemetry = telemetry
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = ControlCollector()
        self.registry.register(self.collector)
        self._lock = asyncio.Lock()

    async def gather(self) -> ScrapeView:
        registry = self.ops.ctx.registry
        services = await asyncio.to_thread(registry.list_services)
        instances = await asyncio.to_thread(registry.list_instances)
        manager = self.ops.ctx.gateways
        gateways = []
        for name in manager.names():
            sup = manager.get(name)
            if sup is not None:
                gateways.append(
                    GatewayState(name, sup.status, sup.pid is not None, sup.ready.is_set(), sup.starts)
                )
        view = ScrapeView(services, instances, gateways)
        t = self.telemetry
        if t is not None:
            view.telemetry = (t.rounds, t.errors, t.gateways_read)
            names = {s.name for s in services}
            view.loads = {n: t.load(n, LOAD_WINDOW_S) for n in sorted(names)}
        view.federated = await self.federate(services, instances)
        return view

    async def federate(
        self, services: list[ServiceRecord], instances: list[InstanceRecord]
    ) -> list[Federated]:
        wanted = {
            s.name for s in services if processor_of(s) in FEDERATED_PROCESSORS and s.desired == "running"
        }
        targets = [i for i in instances if i.service in wanted and i.state == "ready" and i.port]
        if not targets:
            return []
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, trust_env=False) as client:

            async def fetch(inst: InstanceRecord) -> Federated:
                try:
                    response = await client.get(instance_url(inst))
                    response.raise_for_status()
                    families = parse_federated(inst.service, inst.id, response.text)
                except (httpx.HTTPError, ValueError):
                    return Federated(inst.service, inst.id, False, [])
                return Federated(inst.service, inst.id, True, families)

            return list(await asyncio.gather(*(fetch(i) for i in targets)))

    async def render(self) -> bytes:
        async with self._lock:  # the collector renders the view of this scrape only
            self.collector.view = await self.gather()
            try:
                return generate_latest(self.registry)
            finally:
                self.collector.view = None

    # -- routes ---------------------------------------------------------------------------
    async def metrics(self, request: Request) -> Response:
        return Response(await self.render(), media_type=PROMETHEUS_TYPE)

    async def service_series(self, request: Request) -> Response:
        name = self.read.name(request)
        await self.ops.services.get(name)
        raw = request.query_params.get("window", str(DEFAULT_WINDOW_S))
        t = self.telemetry
        retention = int(t.settings.retention_s) if t is not None else 600
        if not raw.isdigit() or not 10 <= int(raw) <= retention:
            raise ApiError(
                400, "InvalidRequest", f"window is a number of seconds from 10 to {retention}, got {raw!r}"
            )
        window = int(raw)
        points = t.series(name, window) if t is not None else []
        load = t.load(name, min(window, LOAD_WINDOW_S)) if t is not None else None
        classes: dict[str, float] = {}
        codes: dict[str, float] = {}
        for p in points:
            for k, v in p["classes"].items():
                classes[k] = classes.get(k, 0.0) + v * p["dt"]
            for k, v in p["codes"].items():
                codes[k] = codes.get(k, 0.0) + v * p["dt"]
        return JSONResponse(
            {
                "name": name,
                "window": window,
                "interval": t.settings.interval_s if t is not None else None,
                "now": time.time(),
                "points": points,
                "totals": {
                    "requests": sum(p["requests"] for p in points),
                    "classes": {k: round(v) for k, v in classes.items()},
                    "codes": {k: round(v) for k, v in sorted(codes.items())},
                },
                "load": None
                if load is None
                else {
                    "qps": round(load.qps, 3),
                    "in_flight": round(load.in_flight, 3),
                    "waiting": load.waiting,
                    "last_request_at": load.last_request_at,
                },
            }
        )


def metrics_endpoints(ops: ControlOps, reader: RequestReader, telemetry: Telemetry | None) -> list[Endpoint]:
    """`GET /metrics` and the console's series route (both behind the surface's credential)."""
    m = ControlMetrics(ops, reader, telemetry)
    return [
        Endpoint("GET", "/metrics", m.metrics),
        Endpoint("GET", PREFIX + "/services/{region}/{name}/metrics", m.service_series),
    ]
