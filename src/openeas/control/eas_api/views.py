"""openeas's own views (the JSON of /api/v2 that the CLI reads) -> EAS's response models.

Pure functions, no I/O. Where EAS has an identifier openeas does not (ServiceId, ServiceUid,
GatewayId), openeas's name is used: names are unique per server, as EAS's ids are per region.
Times are EAS's `2006-01-02T15:04:05Z` (UTC).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from openeas.control.eas_api import models as m

SHARED_GATEWAY = "shared"
INSTANCE_STATUS = {  # openeas instance state -> EAS instance status
    "starting": "Pending",
    "ready": "Running",
    "unready": "Running",  # alive, failing its readiness probe: EAS shows it Running, not ready
    "failed": "Failed",
    "stopping": "Terminating",
}


def eas_time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return math.ceil(value)


def service(view: dict[str, Any], versions: dict[str, Any] | None = None) -> m.Service:
    spec = _obj(view.get("spec"))
    meta = _obj(spec.get("metadata"))
    containers = _list(spec.get("containers"))
    first = _obj(containers[0]) if containers else {}
    endpoints = _obj(view.get("endpoints"))
    total = int(view.get("instance") or 0)
    running = int(view.get("running_instances") or 0)
    labels = _obj(spec.get("labels"))
    current = latest = None
    if versions is not None:
        listed = _list(versions.get("versions"))
        current = int(versions.get("current") or 0) or None
        latest = max((int(v["version"]) for v in listed if isinstance(v, dict)), default=0) or None
    return m.Service(
        ServiceName=view["name"],
        ServiceId=view["name"],
        ServiceUid=view["name"],
        Region=view["region"],
        Status=view["status"],
        Message=view.get("message") or "",
        Reason=(view.get("message") or "") if view["status"] == "Failed" else "",
        AccessToken=view.get("token"),
        InternetEndpoint=endpoints.get("internet"),
        IntranetEndpoint=endpoints.get("vpc"),
        Gateway=view.get("gateway") or SHARED_GATEWAY,
        ServiceGroup=meta.get("group"),
        TotalInstance=total,
        RunningInstance=running,
        PendingInstance=max(0, total - running) if view.get("desired_state") == "running" else 0,
        CurrentVersion=current,
        LatestVersion=latest,
        Cpu=_int(meta.get("cpu")),
        Memory=_int(meta.get("memory")),
        Gpu=_int(meta.get("gpu")),
        Image=first.get("image"),
        Resource=meta.get("resource"),
        Labels=[m.ServiceLabel(LabelKey=str(k), LabelValue=str(v)) for k, v in labels.items()],
        ServiceConfig=json.dumps(spec, sort_keys=True),
        CreateTime=eas_time(view.get("created_at")),
        UpdateTime=eas_time(view.get("updated_at")),
    )


def endpoints(view: dict[str, Any]) -> m.DescribeServiceEndpointsResponse:
    """From the service view (`/endpoints` of openeas has the same facts, fewer of them)."""
    gateway = view.get("gateway") or SHARED_GATEWAY
    eps = _obj(view.get("endpoints"))
    internet, vpc = eps.get("internet"), eps.get("vpc")
    port = urlsplit(internet or vpc or "").port or 0
    entry = m.EndpointEntry(
        EndpointType="DefaultGateway" if gateway == SHARED_GATEWAY else "PrivateGateway",
        BackendId=gateway,
        InternetEndpoints=[internet] if internet else [],
        IntranetEndpoints=[vpc] if vpc else [],
        Port=port,
    )
    return m.DescribeServiceEndpointsResponse(
        AccessToken=view.get("token") or "", Endpoints=[entry], RequestId=""
    )


def instance(row: dict[str, Any]) -> m.Instance:
    state = str(row.get("state") or "")
    started = eas_time(row.get("started_at"))
    return m.Instance(
        InstanceName=str(row["id"]),
        Status=INSTANCE_STATUS.get(state, "Pending"),
        HostIP=str(row.get("host") or ""),
        InnerIP=str(row.get("host") or ""),
        InstancePort=int(row.get("port") or 0),
        RestartCount=int(row.get("restarts") or 0),
        ReadyProcesses=1 if state == "ready" else 0,
        TotalProcesses=1,
        Reason=str(row.get("message") or ""),
        StartAt=started,
        StartTime=started,
    )


def version(row: dict[str, Any]) -> m.ServiceVersion:
    return m.ServiceVersion(
        ImageId=int(row["version"]),
        BuildTime=eas_time(row.get("created_at")),
        Message=str(row.get("note") or ""),
        ServiceConfig=json.dumps(_obj(row.get("spec")), sort_keys=True),
    )


def group(view: dict[str, Any], region: str) -> m.Group:
    eps = _obj(view.get("endpoints"))
    return m.Group(
        Name=view["name"],
        ClusterId=region,
        AccessToken=view.get("token") or "",
        InternetEndpoint=eps.get("internet"),
        IntranetEndpoint=eps.get("vpc"),
        TrafficMode=view.get("traffic_mode") or "auto",
        CreateTime=eas_time(view.get("created_at")),
        UpdateTime=eas_time(view.get("updated_at")),
    )


def _domain(url: Any) -> str:
    """EAS reports a gateway's domain without the scheme: `host:port` here."""
    return urlsplit(url).netloc if isinstance(url, str) and url else ""


def gateway(view: dict[str, Any]) -> m.Gateway:
    spec = _obj(view.get("spec"))
    eps = _obj(view.get("endpoints"))
    return m.Gateway(
        GatewayId=view["name"],
        GatewayName=view["name"],
        Replicas=int(spec.get("replicas") or 1),
        InternetEnabled=bool(spec.get("enable_internet")),
        IntranetEnabled=bool(spec.get("enable_intranet", True)),
        InternetDomain=_domain(eps.get("internet")),
        IntranetDomain=_domain(eps.get("intranet")),
        SSLRedirectionEnabled=bool(spec.get("ssl_redirect")),
        Status=view.get("status") or "",
        CreateTime=eas_time(view.get("created_at")),
        UpdateTime=eas_time(view.get("updated_at")),
    )


def acl(entries: Any) -> list[m.AclPolicy]:
    rows = _list(entries)
    return [
        m.AclPolicy(Entry=str(e.get("entry")), Comment=str(e.get("comment") or ""))
        for e in rows
        if isinstance(e, dict)
    ]


def autoscaler(name: str, view: dict[str, Any]) -> m.DescribeServiceAutoScalerResponse:
    spec = _obj(_obj(view.get("spec")).get("autoscaler"))
    if not spec:
        return m.DescribeServiceAutoScalerResponse(ServiceName=name, RequestId="")
    strategies = [
        m.ScaleStrategy(
            metricName=str(s.get("metricName")), threshold=float(s.get("threshold") or 0), service=name
        )
        for s in spec.get("scaleStrategies") or []
        if isinstance(s, dict)
    ]
    return m.DescribeServiceAutoScalerResponse(
        ServiceName=name,
        MinReplica=_int(spec.get("min")),
        MaxReplica=_int(spec.get("max")),
        ScaleStrategies=strategies,
        Behavior=_obj(spec.get("behavior")),
        RequestId="",
    )


def mirror(name: str, view: dict[str, Any]) -> m.DescribeServiceMirrorResponse:
    spec = _obj(_obj(view.get("spec")).get("mirror"))
    targets = _list(spec.get("target"))
    ratio = spec.get("ratio")
    return m.DescribeServiceMirrorResponse(
        ServiceName=name,
        Ratio="" if ratio is None else str(ratio),
        Target=",".join(str(t) for t in targets),
        RequestId="",
    )


def page(items: list[Any], number: int, size: int) -> list[Any]:
    start = (number - 1) * size
    return items[start : start + size]
