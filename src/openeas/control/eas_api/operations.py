"""EAS's management operations: path, method, request and response models, and what each does.

`operations()` is the table the dispatcher (app.py) routes by and the OpenAPI generator
(openapi.py) documents. Each handler translates: EAS's request -> openeas's own routes (through
`NativeApi`, so no domain rule is written twice) -> EAS's response model (views.py).

`read_only=True` marks what a read-only AccessKey may call: the Describe*/List* operations.

Choices where EAS and openeas differ (docs/management-api.md repeats them):
- UpdateService `UpdateType=merge` (the default) deep-merges the body into the spec; `replace`
  is refused (400 UnsupportedOperation): openeas's modify merges objects key by key.
- Scaling is UpdateService with `{"metadata": {"instance": N}}`, as in EAS; it does not restart
  instances and makes no new version.
- RestartService stops the service's instances and starts new ones, answering at once (as EAS);
  the restart finishes in the background; DescribeService shows its progress.
- CreateGateway makes a dedicated gateway listening on ports free at creation on the hosts the
  shared gateway binds (fixed from then on, so restarts keep its domains); its id (`gw-` + 10
  characters) is also its name in openeas.
- ACLs: `VpcId` absent means the Internet allow-list; any `VpcId` means the one intranet
  allow-list (openeas has a single intranet network per gateway), listed under VpcId `vpc-local`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from openeas.control.eas_api import models as m
from openeas.control.eas_api import views
from openeas.control.eas_api.errors import EasError
from openeas.control.eas_api.native import NativeApi
from openeas.spec.service import AutoscalerBehavior

INTRANET_VPC = "vpc-local"
RESTART_WAIT_S = 120.0
_GW_ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class Call:
    """One EAS request, parsed."""

    path: dict[str, str]
    query: Any  # the operation's query model instance, or None
    body: Any  # the operation's body model instance, a JSON object (service specs), or None
    request_id: str


Handler = Callable[[Call], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str  # with {ClusterId}-style parameters
    handler: Handler
    response: type[BaseModel]
    summary: str
    read_only: bool = False
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    spec_body: bool = False  # the body is a service spec (any JSON object), as EAS's CreateService
    status: int = 200
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


@dataclass(frozen=True)
class GatewayHosts:
    """Where a gateway made by CreateGateway listens (the shared gateway's bind hosts)."""

    internet: str
    intranet: str


def free_port(host: str) -> int:
    """A port free on `host` now (the gateway binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host.strip("[]"), 0))
        port: int = sock.getsockname()[1]
        return port


def parse_json_list(raw: str, what: str) -> list[Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EasError(400, "InvalidParameter", f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise EasError(400, "InvalidParameter", f"{what} must be a JSON list")
    return data


def parse_labels(raw: str | None, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EasError(400, "InvalidParameter", f"{what} is not valid JSON: {exc}") from None
    if isinstance(data, list):  # the SDK's array style: [{"LabelKey":..., "LabelValue":...}]
        out = {}
        for item in data:
            if not isinstance(item, dict) or "LabelKey" not in item:
                raise EasError(400, "InvalidParameter", f"{what}: each item needs LabelKey and LabelValue")
            out[str(item["LabelKey"])] = str(item.get("LabelValue", ""))
        return out
    if not isinstance(data, dict):
        raise EasError(400, "InvalidParameter", f'{what} must be a JSON object {{"key": "value"}}')
    return {str(k): str(v) for k, v in data.items()}


class EasOperations:
    def __init__(self, native: NativeApi, hosts: GatewayHosts):
        self.native = native
        self.hosts = hosts
        self._background: set[asyncio.Task[None]] = set()

    # -- helpers ---------------------------------------------------------------------------
    def svc(self, call: Call, action: str = "") -> str:
        return self.native.path("services", call.path["ClusterId"], call.path["ServiceName"], action)

    def gw(self, call: Call) -> str:
        return self.native.path("gateways", call.path["ClusterId"], call.path["GatewayId"])

    async def service_view(self, call: Call) -> dict[str, Any]:
        view: dict[str, Any] = await self.native.call("GET", self.svc(call))
        return view

    async def modify(self, call: Call, patch: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = await self.native.call("PUT", self.svc(call), {"spec": patch})
        return view

    @staticmethod
    def done(call: Call, message: str) -> m.MessageBody:
        return m.MessageBody(Message=message, RequestId=call.request_id)

    # -- services --------------------------------------------------------------------------
    async def create_service(self, call: Call) -> BaseModel:
        spec = dict(call.body)
        labels = parse_labels(call.query.Labels, "Labels")
        if labels:
            spec["labels"] = {**(spec.get("labels") or {}), **labels}
        view = await self.native.call("POST", "/api/v2/services", spec)
        eps = view.get("endpoints") or {}
        return m.CreateServiceResponse(
            ServiceName=view["name"],
            ServiceId=view["name"],
            Region=view["region"],
            Status=view["status"],
            InternetEndpoint=eps.get("internet"),
            IntranetEndpoint=eps.get("vpc"),
            RequestId=call.request_id,
        )

    async def describe_service(self, call: Call) -> BaseModel:
        view = await self.service_view(call)
        versions = await self.native.call("GET", self.svc(call, "versions"))
        return m.DescribeServiceResponse(
            **views.service(view, versions).model_dump(), RequestId=call.request_id
        )

    async def list_services(self, call: Call) -> BaseModel:
        q: m.ListServicesQuery = call.query
        data = await self.native.call("GET", "/api/v2/services")
        services = [views.service(v) for v in data["services"]]
        want_labels = parse_labels(q.Label, "Label")

        def keep(s: m.Service) -> bool:
            spec = json.loads(s.ServiceConfig)
            meta = spec.get("metadata") or {}
            labels = {lb.LabelKey: lb.LabelValue for lb in s.Labels}
            return (
                (q.Filter is None or q.Filter in s.ServiceName)
                and (q.ServiceName is None or q.ServiceName == s.ServiceName)
                and (q.ServiceUid is None or q.ServiceUid == s.ServiceUid)
                and (q.ServiceStatus is None or q.ServiceStatus == s.Status)
                and (q.Gateway is None or q.Gateway == s.Gateway)
                and (q.GroupName is None or q.GroupName == s.ServiceGroup)
                and (q.ServiceType is None or q.ServiceType == meta.get("type"))
                and (q.ResourceName is None or q.ResourceName == meta.get("resource"))
                and all(labels.get(k) == v for k, v in want_labels.items())
            )

        chosen = [s for s in services if keep(s)]
        chosen.sort(key=lambda s: getattr(s, q.Sort), reverse=q.Order.lower() == "desc")
        return m.ListServicesResponse(
            Services=views.page(chosen, q.PageNumber, q.PageSize),
            PageNumber=q.PageNumber,
            PageSize=q.PageSize,
            TotalCount=len(chosen),
            RequestId=call.request_id,
        )

    async def update_service(self, call: Call) -> BaseModel:
        if call.query.UpdateType == "replace":
            # openeas's modify merges objects key by key: it cannot express "drop what the body
            # lacks" (nested defaults, labels), and a half-done replace would surprise
            raise EasError(
                400,
                "UnsupportedOperation",
                "UpdateType=replace is not supported by openeas: send only the fields to change "
                "(UpdateType=merge, the default; null removes an optional field such as autoscaler), "
                "or delete and create the service",
            )
        await self.modify(call, dict(call.body))
        return self.done(call, "service updated")

    async def update_service_version(self, call: Call) -> BaseModel:
        await self.native.call("PUT", self.svc(call, "version"), {"version": call.body.Version})
        return self.done(call, f"rolling back to version {call.body.Version}")

    async def update_service_instance(self, call: Call) -> BaseModel:
        raise EasError(
            400,
            "UnsupportedOperation",
            "openeas cannot isolate or detach one instance yet; scale the service with UpdateService "
            '{"metadata": {"instance": N}}, or stop it',
        )

    async def start_service(self, call: Call) -> BaseModel:
        await self.native.call("POST", self.svc(call, "start"))
        return self.done(call, "service starting")

    async def stop_service(self, call: Call) -> BaseModel:
        await self.native.call("POST", self.svc(call, "stop"))
        return self.done(call, "service stopped")

    async def restart_service(self, call: Call) -> BaseModel:
        view = await self.service_view(call)
        if view.get("desired_state") != "running":
            raise EasError(
                400, "ServiceNotRunning", f"service '{view['name']}' is stopped; start it with StartService"
            )
        await self.native.call("POST", self.svc(call, "stop"))
        task = asyncio.create_task(self._start_when_stopped(call))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return self.done(call, "service restarting: its instances stop, then new ones start")

    async def _start_when_stopped(self, call: Call) -> None:
        deadline = time.monotonic() + RESTART_WAIT_S
        while time.monotonic() < deadline:
            with_rows = await self.native.call("GET", self.svc(call, "instances"))
            if not with_rows["instances"]:
                break
            await asyncio.sleep(0.2)
        await self.native.call("POST", self.svc(call, "start"))

    async def delete_service(self, call: Call) -> BaseModel:
        await self.native.call("DELETE", self.svc(call))
        return self.done(call, "service deleted")

    async def describe_endpoints(self, call: Call) -> BaseModel:
        resp = views.endpoints(await self.service_view(call))
        return resp.model_copy(update={"RequestId": call.request_id})

    async def list_instances(self, call: Call) -> BaseModel:
        q: m.ListServiceInstancesQuery = call.query
        rows = (await self.native.call("GET", self.svc(call, "instances")))["instances"]
        found = [views.instance(r) for r in rows]
        chosen = [
            i
            for i in found
            if (q.Filter is None or q.Filter in i.InstanceName)
            and (q.InstanceName is None or q.InstanceName == i.InstanceName)
            and (q.InstanceStatus is None or q.InstanceStatus == i.Status)
            and (q.HostIP is None or q.HostIP == i.HostIP)
            and (q.InstanceIP is None or q.InstanceIP == i.InnerIP)
        ]
        return m.ListServiceInstancesResponse(
            Instances=views.page(chosen, q.PageNumber, q.PageSize),
            PageNumber=q.PageNumber,
            PageSize=q.PageSize,
            TotalCount=len(chosen),
            RequestId=call.request_id,
        )

    async def describe_log(self, call: Call) -> BaseModel:
        q: m.DescribeServiceLogQuery = call.query
        params: dict[str, Any] = {"tail": 10_000}
        if q.InstanceName:
            params["instance"] = q.InstanceName
        data = await self.native.call("GET", self.svc(call, "logs"), params=params)
        lines = [line for log in data["logs"] for line in log["lines"]]
        if q.Keyword:
            lines = [line for line in lines if q.Keyword in line]
        total = len(lines)
        end = total - (q.PageNum - 1) * q.PageSize  # page 1: the newest lines
        chunk = lines[max(0, end - q.PageSize) : max(0, end)]
        return m.DescribeServiceLogResponse(
            Logs=chunk,
            PageNum=q.PageNum,
            TotalCount=total,
            TotalPageNum=max(1, -(-total // q.PageSize)),
            RequestId=call.request_id,
        )

    async def list_versions(self, call: Call) -> BaseModel:
        q: m.ListServiceVersionsQuery = call.query
        data = await self.native.call("GET", self.svc(call, "versions"))
        rows = [views.version(v) for v in reversed(data["versions"])]  # newest first, as EAS
        return m.ListServiceVersionsResponse(
            Versions=views.page(rows, q.PageNumber, q.PageSize),
            PageNumber=q.PageNumber,
            PageSize=q.PageSize,
            TotalCount=len(rows),
            RequestId=call.request_id,
        )

    # -- autoscaler, mirror ----------------------------------------------------------------
    async def set_autoscaler(self, call: Call) -> BaseModel:
        body: m.AutoScalerBody = call.body
        spec: dict[str, Any] = {
            "min": body.min,
            "max": body.max,
            "scaleStrategies": [
                {"metricName": s.metricName, "threshold": s.threshold} for s in body.scaleStrategies
            ],
        }
        # the whole block is the new setting: no behavior given means the spec's defaults, not
        # the behavior set before (the control API merges objects key by key)
        spec["behavior"] = (
            body.behavior if body.behavior is not None else AutoscalerBehavior().model_dump(by_alias=True)
        )
        await self.modify(call, {"autoscaler": spec})
        return self.done(call, "autoscaler set")

    async def describe_autoscaler(self, call: Call) -> BaseModel:
        view = await self.service_view(call)
        resp = views.autoscaler(view["name"], view)
        return resp.model_copy(update={"RequestId": call.request_id})

    async def delete_autoscaler(self, call: Call) -> BaseModel:
        await self.modify(call, {"autoscaler": None})
        return self.done(call, "autoscaler deleted")

    async def set_mirror(self, call: Call) -> BaseModel:
        body: m.MirrorBody = call.body
        await self.modify(call, {"mirror": {"target": body.Target, "ratio": body.Ratio}})
        return self.done(call, "mirror set")

    async def describe_mirror(self, call: Call) -> BaseModel:
        view = await self.service_view(call)
        return views.mirror(view["name"], view).model_copy(update={"RequestId": call.request_id})

    async def delete_mirror(self, call: Call) -> BaseModel:
        await self.modify(call, {"mirror": None})
        return self.done(call, "mirror deleted")

    # -- groups ----------------------------------------------------------------------------
    async def list_groups(self, call: Call) -> BaseModel:
        q: m.ListGroupsQuery = call.query
        data = await self.native.call("GET", "/api/v2/groups")
        groups = [views.group(g, self.native.region) for g in data["groups"]]
        chosen = [g for g in groups if q.Filter is None or q.Filter in g.Name]
        return m.ListGroupsResponse(
            Groups=views.page(chosen, q.PageNumber, q.PageSize),
            PageNumber=q.PageNumber,
            PageSize=q.PageSize,
            TotalCount=len(chosen),
            RequestId=call.request_id,
        )

    async def describe_group(self, call: Call) -> BaseModel:
        path = self.native.path("groups", call.path["ClusterId"], call.path["GroupName"])
        group = views.group(await self.native.call("GET", path), call.path["ClusterId"])
        return m.DescribeGroupResponse(**group.model_dump(), RequestId=call.request_id)

    # -- gateways --------------------------------------------------------------------------
    async def create_gateway(self, call: Call) -> BaseModel:
        body: m.CreateGatewayBody = call.body
        gateway_id = "gw-" + "".join(secrets.choice(_GW_ALPHABET) for _ in range(10))
        spec = {
            "name": gateway_id,
            "enable_internet": body.EnableInternet,
            "enable_intranet": body.EnableIntranet,
            # concrete ports, not 0: a gateway restart (UpdateGateway) must keep its domains
            "listen": {
                "internet": f"{self.hosts.internet}:{free_port(self.hosts.internet)}",
                "intranet": f"{self.hosts.intranet}:{free_port(self.hosts.intranet)}",
            },
            "replicas": body.Replicas,
        }
        await self.native.call("POST", "/api/v2/gateways", spec)
        return m.CreateGatewayResponse(
            GatewayId=gateway_id,
            ClusterId=self.native.region,
            Message="gateway creating",
            RequestId=call.request_id,
        )

    async def describe_gateway(self, call: Call) -> BaseModel:
        view = await self.native.call("GET", self.gw(call))
        gw = views.gateway(view)
        return m.DescribeGatewayResponse(
            **gw.model_dump(),
            InternetStatus="Running" if gw.InternetEnabled else "Stopped",
            ExternalClusterId=call.path["ClusterId"],
            RequestId=call.request_id,
        )

    async def list_gateways(self, call: Call) -> BaseModel:
        q: m.ListGatewayQuery = call.query
        data = await self.native.call("GET", "/api/v2/gateways")
        found = [views.gateway(g) for g in data["gateways"] if g.get("type") != "shared"]
        chosen = [
            g
            for g in found
            if (q.GatewayId is None or q.GatewayId == g.GatewayId)
            and (q.GatewayName is None or q.GatewayName in g.GatewayName)
        ]
        return m.ListGatewayResponse(
            Gateways=views.page(chosen, q.PageNumber, q.PageSize),
            PageNumber=q.PageNumber,
            PageSize=q.PageSize,
            TotalCount=len(chosen),
            RequestId=call.request_id,
        )

    async def update_gateway(self, call: Call) -> BaseModel:
        body: m.UpdateGatewayBody = call.body
        patch: dict[str, Any] = {}
        if body.Replicas is not None:
            patch["replicas"] = body.Replicas
        if body.EnableInternet is not None:
            patch["enable_internet"] = body.EnableInternet
        if body.EnableIntranet is not None:
            patch["enable_intranet"] = body.EnableIntranet
        if body.EnableSSLRedirection is not None:
            patch["ssl_redirect"] = body.EnableSSLRedirection
        if patch:
            await self.native.call("PUT", self.gw(call), {"spec": patch})
        else:
            await self.native.call("GET", self.gw(call))  # the 404 of a gateway that is not there
        return m.GatewayIdResponse(
            GatewayId=call.path["GatewayId"], Message="gateway updated", RequestId=call.request_id
        )

    async def delete_gateway(self, call: Call) -> BaseModel:
        await self.native.call("DELETE", self.gw(call))
        return m.GatewayIdResponse(
            GatewayId=call.path["GatewayId"], Message="gateway deleted", RequestId=call.request_id
        )

    async def list_acl(self, call: Call) -> BaseModel:
        spec = (await self.native.call("GET", self.gw(call)))["spec"]
        intranet = views.acl(spec.get("intranet_acl"))
        return m.ListAclPolicyResponse(
            GatewayId=call.path["GatewayId"],
            InternetAclPolicyList=[m.InternetAclPolicies(AclPolicyList=views.acl(spec.get("internet_acl")))]
            if call.query.VpcId is None
            else [],
            IntranetVpcAclPolicyList=[
                m.IntranetAclPolicies(VpcId=call.query.VpcId or INTRANET_VPC, AclPolicyList=intranet)
            ],
            RequestId=call.request_id,
        )

    async def change_acl(self, call: Call, add: bool) -> BaseModel:
        q: m.AclPolicyQuery = call.query
        entries = []
        for i, item in enumerate(parse_json_list(q.AclPolicyList, "AclPolicyList")):
            try:
                entries.append(m.AclPolicy.model_validate(item))
            except ValidationError as exc:
                raise EasError(
                    400, "InvalidParameter", f"AclPolicyList[{i}]: {_first_problem(exc)}"
                ) from None
        key = "internet_acl" if q.VpcId is None else "intranet_acl"
        spec = (await self.native.call("GET", self.gw(call)))["spec"]
        current: list[dict[str, Any]] = list(spec.get(key) or [])
        if add:
            known = {e.get("entry") for e in current}
            current += [{"entry": e.Entry, "comment": e.Comment} for e in entries if e.Entry not in known]
        else:
            gone = {e.Entry for e in entries}
            current = [e for e in current if e.get("entry") not in gone]
        # the control API normalizes CIDRs (10.0.0.1/8 -> 10.0.0.0/8) and names a bad one
        await self.native.call("PUT", self.gw(call), {"spec": {key: current}})
        return m.GatewayIdResponse(
            GatewayId=call.path["GatewayId"],
            Message="acl policy " + ("added" if add else "deleted"),
            RequestId=call.request_id,
        )

    async def create_acl(self, call: Call) -> BaseModel:
        return await self.change_acl(call, add=True)

    async def delete_acl(self, call: Call) -> BaseModel:
        return await self.change_acl(call, add=False)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "(value)"
    return f"{where}: {err.get('msg')}"


def operations(ops: EasOperations) -> list[Operation]:
    svc = "/api/v2/services/{ClusterId}/{ServiceName}"
    gw = "/api/v2/gateways/{ClusterId}/{GatewayId}"
    msg = m.MessageBody
    gwid = m.GatewayIdResponse
    return [
        Operation(
            "CreateService",
            "POST",
            "/api/v2/services",
            ops.create_service,
            m.CreateServiceResponse,
            "Create a service from its JSON spec (the body).",
            query=m.CreateServiceQuery,
            spec_body=True,
        ),
        Operation(
            "ListServices",
            "GET",
            "/api/v2/services",
            ops.list_services,
            m.ListServicesResponse,
            "List services, with filters and paging.",
            read_only=True,
            query=m.ListServicesQuery,
        ),
        Operation(
            "DescribeService",
            "GET",
            svc,
            ops.describe_service,
            m.DescribeServiceResponse,
            "A service: status, instances, endpoints, token, spec.",
            read_only=True,
        ),
        Operation(
            "UpdateService",
            "PUT",
            svc,
            ops.update_service,
            msg,
            "Change a service's spec (merge or replace); scale with metadata.instance.",
            query=m.UpdateServiceQuery,
            spec_body=True,
        ),
        Operation("DeleteService", "DELETE", svc, ops.delete_service, msg, "Delete a service."),
        Operation("StartService", "PUT", svc + "/start", ops.start_service, msg, "Start a stopped service."),
        Operation("StopService", "PUT", svc + "/stop", ops.stop_service, msg, "Stop a service's instances."),
        Operation(
            "RestartService",
            "PUT",
            svc + "/restart",
            ops.restart_service,
            msg,
            "Replace all of a service's instances.",
        ),
        Operation(
            "DescribeServiceEndpoints",
            "GET",
            svc + "/endpoints",
            ops.describe_endpoints,
            m.DescribeServiceEndpointsResponse,
            "A service's endpoints and token.",
            read_only=True,
        ),
        Operation(
            "ListServiceInstances",
            "GET",
            svc + "/instances",
            ops.list_instances,
            m.ListServiceInstancesResponse,
            "A service's instances.",
            read_only=True,
            query=m.ListServiceInstancesQuery,
        ),
        Operation(
            "UpdateServiceInstance",
            "PUT",
            svc + "/instances/{InstanceName}",
            ops.update_service_instance,
            msg,
            "Isolate or detach an instance (not supported by openeas).",
            body=m.UpdateServiceInstanceBody,
        ),
        Operation(
            "DescribeServiceLog",
            "GET",
            svc + "/logs",
            ops.describe_log,
            m.DescribeServiceLogResponse,
            "Log lines of a service's instances, newest page first.",
            read_only=True,
            query=m.DescribeServiceLogQuery,
        ),
        Operation(
            "ListServiceVersions",
            "GET",
            svc + "/versions",
            ops.list_versions,
            m.ListServiceVersionsResponse,
            "A service's versions, newest first.",
            read_only=True,
            query=m.ListServiceVersionsQuery,
        ),
        Operation(
            "UpdateServiceVersion",
            "PUT",
            svc + "/version",
            ops.update_service_version,
            msg,
            "Roll a service to one of its versions.",
            body=m.UpdateServiceVersionBody,
        ),
        Operation(
            "CreateServiceAutoScaler",
            "POST",
            svc + "/autoscaler",
            ops.set_autoscaler,
            msg,
            "Set a service's autoscaler.",
            body=m.AutoScalerBody,
        ),
        Operation(
            "UpdateServiceAutoScaler",
            "PUT",
            svc + "/autoscaler",
            ops.set_autoscaler,
            msg,
            "Replace a service's autoscaler.",
            body=m.AutoScalerBody,
        ),
        Operation(
            "DescribeServiceAutoScaler",
            "GET",
            svc + "/autoscaler",
            ops.describe_autoscaler,
            m.DescribeServiceAutoScalerResponse,
            "A service's autoscaler.",
            read_only=True,
        ),
        Operation(
            "DeleteServiceAutoScaler",
            "DELETE",
            svc + "/autoscaler",
            ops.delete_autoscaler,
            msg,
            "Remove a service's autoscaler.",
        ),
        Operation(
            "CreateServiceMirror",
            "POST",
            svc + "/mirror",
            ops.set_mirror,
            msg,
            "Copy a share of a service's requests to other services.",
            body=m.MirrorBody,
        ),
        Operation(
            "UpdateServiceMirror",
            "PUT",
            svc + "/mirror",
            ops.set_mirror,
            msg,
            "Change a service's mirror.",
            body=m.MirrorBody,
        ),
        Operation(
            "DescribeServiceMirror",
            "GET",
            svc + "/mirror",
            ops.describe_mirror,
            m.DescribeServiceMirrorResponse,
            "A service's mirror.",
            read_only=True,
        ),
        Operation(
            "DeleteServiceMirror",
            "DELETE",
            svc + "/mirror",
            ops.delete_mirror,
            msg,
            "Stop mirroring a service's requests.",
        ),
        Operation(
            "ListGroups",
            "GET",
            "/api/v2/groups",
            ops.list_groups,
            m.ListGroupsResponse,
            "Service groups.",
            read_only=True,
            query=m.ListGroupsQuery,
        ),
        Operation(
            "DescribeGroup",
            "GET",
            "/api/v2/groups/{ClusterId}/{GroupName}",
            ops.describe_group,
            m.DescribeGroupResponse,
            "A service group.",
            read_only=True,
        ),
        Operation(
            "CreateGateway",
            "POST",
            "/api/v2/gateways",
            ops.create_gateway,
            m.CreateGatewayResponse,
            "Create a dedicated gateway.",
            query=m.CreateGatewayQuery,
            body=m.CreateGatewayBody,
        ),
        Operation(
            "ListGateway",
            "GET",
            "/api/v2/gateways",
            ops.list_gateways,
            m.ListGatewayResponse,
            "Dedicated gateways.",
            read_only=True,
            query=m.ListGatewayQuery,
        ),
        Operation(
            "DescribeGateway",
            "GET",
            gw,
            ops.describe_gateway,
            m.DescribeGatewayResponse,
            "A gateway.",
            read_only=True,
        ),
        Operation(
            "UpdateGateway",
            "PUT",
            gw,
            ops.update_gateway,
            gwid,
            "Change a dedicated gateway (replicas, Internet/intranet access, SSL redirect).",
            body=m.UpdateGatewayBody,
        ),
        Operation(
            "DeleteGateway",
            "DELETE",
            gw,
            ops.delete_gateway,
            gwid,
            "Delete a dedicated gateway no service uses.",
        ),
        Operation(
            "ListAclPolicy",
            "GET",
            gw + "/acl_policy",
            ops.list_acl,
            m.ListAclPolicyResponse,
            "A gateway's allow-lists.",
            read_only=True,
            query=m.ListAclPolicyQuery,
        ),
        Operation(
            "CreateAclPolicy",
            "POST",
            gw + "/acl_policy",
            ops.create_acl,
            gwid,
            "Add CIDR blocks to a gateway's allow-list.",
            query=m.AclPolicyQuery,
        ),
        Operation(
            "DeleteAclPolicy",
            "DELETE",
            gw + "/acl_policy",
            ops.delete_acl,
            gwid,
            "Remove CIDR blocks from a gateway's allow-list.",
            query=m.AclPolicyQuery,
        ),
    ]
