"""The control-plane REST API, under /api/v2 (eas-reference section 10).

Every route but `GET /api/v2/health` needs `Authorization: Bearer <admin token>`. Errors are
JSON `{"code": "...", "message": "what is wrong and what to do", ...}`:

    400 InvalidJSON / InvalidSpec (with "problems": [{"field", "problem"}]) / InvalidRequest
    401 Unauthorized          404 ServiceNotFound / GatewayNotFound / RegionNotFound /
                                  InstanceNotFound / NotFound
    405 MethodNotAllowed      409 ServiceAlreadyExists / GatewayAlreadyExists / GatewayInUse /
                                  SharedGatewayReadOnly / GatewayDeleting
    500 InternalError

Routes (region is the server's `--region`, "local" by default):

    GET    /api/v2/health
    POST   /api/v2/services                              body: service spec -> 201 view
    GET    /api/v2/services                              -> {"services": [view], "total": n}
    GET    /api/v2/services/{region}/{name}              -> view
    PUT    /api/v2/services/{region}/{name}              body: {"spec": patch} and/or
                                                           {"assignments": ["k.e.y=value", ...]}
    DELETE /api/v2/services/{region}/{name}              -> {"name", "deleted": true}
    POST   /api/v2/services/{region}/{name}/stop|start   -> view
    POST   /api/v2/services/{region}/{name}/scale        body: {"instance": N} -> view
    GET    /api/v2/services/{region}/{name}/endpoints    -> {"name", "endpoints", "token", "gateway"}
    GET    /api/v2/services/{region}/{name}/instances    -> {"name", "instances": [...]}
    GET    /api/v2/services/{region}/{name}/logs?instance=ID&tail=200
                                                         -> {"name", "logs": [{"instance", "lines"}]}
    GET    /api/v2/services/{region}/{name}/versions     -> {"name", "current", "versions": [...]}
    PUT    /api/v2/services/{region}/{name}/version      body: {"version": N}: rollback (control/versions.py)
    /api/v2/gateways[/{region}/{name}]                   gateways: see control/gateway_api.py
    POST   /api/v2/services/{region}/{name}/debug        online debug (control/console/debug.py)
    GET    /api/v2/services/{region}/{name}/metrics?window=300
                                                         -> request series (control/metrics.py)
    GET    /metrics                                      Prometheus text (admin token as Bearer)

The web console (control/console, docs/console.md) is served under /console; / redirects there.

A service's `endpoints` always has the keys `internet` and `vpc`; each is None when the service's
gateway has that access method off. `networking.gateway` must name an existing gateway, and a
service on a dedicated gateway needs `metadata.instance` >= 1 (EAS: no scale from zero there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openeas.config import ServerConfig
from openeas.control.autoscaler import Autoscaler
from openeas.control.console import console_routes
from openeas.control.endpoints import gateway_bases, service_endpoints
from openeas.control.errors import ApiError, log_failure
from openeas.control.gateway_api import GatewayApi
from openeas.control.gateways import GatewayManager
from openeas.control.groups import GroupApi, ensure_group
from openeas.control.metrics import metrics_routes
from openeas.control.patches import apply_modify, read_modify_body
from openeas.control.reconciler import Reconciler
from openeas.control.telemetry import Telemetry
from openeas.control.versions import VersionApi, version_note
from openeas.runtime.base import Runtime
from openeas.spec import (
    ServiceSpec,
    SpecError,
    deep_merge,
    new_token,
    parse_service_spec,
)
from openeas.spec.errors import FieldProblem
from openeas.store import AlreadyExists, GatewayRecord, InstanceRecord, NotFound, Registry, ServiceRecord

log = logging.getLogger("openeas.control")

PREFIX = "/api/v2"
SHARED_GATEWAY = "shared"
MAX_LOG_TAIL = 10_000
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class ControlContext:
    config: ServerConfig
    registry: Registry
    reconciler: Reconciler
    runtime: Runtime
    admin_token: str
    gateways: GatewayManager
    telemetry: Telemetry | None = None  # the gateways' request telemetry (control/telemetry.py)
    autoscaler: Autoscaler | None = None  # control/autoscaler.py: its last target shows in `desc`


# -- views -----------------------------------------------------------------------------------


def instance_view(inst: InstanceRecord) -> dict[str, Any]:
    return {
        "id": inst.id,
        "revision": inst.revision,
        "state": inst.state,
        "host": inst.host,
        "port": inst.port,
        "pid": inst.pid,
        "restarts": inst.restarts,
        "message": inst.message,
        "started_at": inst.started_at,
        "updated_at": inst.updated_at,
    }


def service_view(
    svc: ServiceRecord,
    instances: list[InstanceRecord],
    bases: dict[str, str | None],
    region: str,
    observed_revision: int,
) -> dict[str, Any]:
    try:
        warnings = parse_service_spec(svc.spec).warnings()
    except SpecError:
        warnings = []
    return {
        "name": svc.name,
        "region": region,
        "status": svc.status,
        "message": svc.message,
        "desired_state": svc.desired,
        "instance": int(svc.spec.get("metadata", {}).get("instance", 1)),
        # what the gateways route to: nothing once the service is stopped
        "running_instances": sum(1 for i in instances if i.state == "ready")
        if svc.desired == "running"
        else 0,
        "token": svc.token,
        "gateway": svc.gateway,
        # both keys always present; None where the service's gateway has that access method off
        "endpoints": service_endpoints(bases, svc.name),
        "spec": svc.spec,
        "warnings": warnings,
        "created_at": svc.created_at,
        "updated_at": svc.updated_at,
        "revision": svc.revision,
        "observed_revision": observed_revision,  # the revision `status` was computed for
    }


# -- the app ---------------------------------------------------------------------------------


class ControlApi:
    def __init__(self, ctx: ControlContext):
        self.ctx = ctx
        self.registry = ctx.registry
        self.region = ctx.config.region
        self._admin = ctx.admin_token.encode()

    # -- plumbing --------------------------------------------------------------------------
    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def authed(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.check_admin(request)
            return await handler(request)

        return endpoint

    def check_admin(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._admin)
        if not ok:
            raise ApiError(
                401,
                "Unauthorized",
                "this API needs the admin token: send `Authorization: Bearer <token>`; the token is "
                "in the file `admin_token` of the server's data dir (the openeas CLI reads it there)",
            )

    def check_region(self, request: Request, kind: str = "services") -> str:
        region = str(request.path_params["region"])
        if region != self.region:
            raise ApiError(
                404,
                "RegionNotFound",
                f"this server serves region '{self.region}', not '{region}'; "
                f"use {PREFIX}/{kind}/{self.region}/<name>",
            )
        return str(request.path_params["name"])

    async def body_json(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise ApiError(400, "InvalidJSON", "the request body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = (
                f" (line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            )
            raise ApiError(400, "InvalidJSON", f"the request body is not valid JSON{where}: {exc}") from None

    async def get_service(self, name: str) -> ServiceRecord:
        try:
            return await self.db(self.registry.get_service, name)
        except NotFound:
            raise ApiError(
                404,
                "ServiceNotFound",
                f"there is no service named '{name}'; `openeas list` shows the services",
                name=name,
            ) from None

    async def view(self, svc: ServiceRecord) -> dict[str, Any]:
        instances = await self.db(self.registry.list_instances, svc.name)
        bases = self.bases(await self.gateway_or_none(svc.gateway))
        view = service_view(
            svc, instances, bases, self.region, self.ctx.reconciler.observed_revision(svc.name)
        )
        if self.ctx.autoscaler is not None and svc.spec.get("autoscaler"):
            view["autoscaler"] = self.ctx.autoscaler.view(svc.name)
        return view

    def bases(self, gateway: GatewayRecord | None) -> dict[str, str | None]:
        """The gateway's base URLs (None for an access method that is off, or no gateway)."""
        if gateway is None:
            return {"internet": None, "intranet": None}
        sup = self.ctx.gateways.get(gateway.name)
        return gateway_bases(gateway.spec, sup.bound if sup is not None else None)

    async def gateway_or_none(self, name: str) -> GatewayRecord | None:
        try:
            return await self.db(self.registry.get_gateway, name)
        except NotFound:
            return None

    async def check_binding(self, spec: ServiceSpec) -> None:
        """`networking.gateway` names a gateway that exists and can serve this service."""
        name = spec.gateway_name
        gateway = await self.gateway_or_none(name)
        if gateway is None or gateway.status == "Deleting":
            gateways = await self.db(self.registry.list_gateways)
            known = ", ".join(g.name for g in gateways if g.status != "Deleting") or "none"
            what = "is being deleted" if gateway is not None else "does not exist"
            raise SpecError.one(
                "networking.gateway",
                f"gateway '{name}' {what} (gateways: {known}); create it first with `openeas gateway "
                "create`, or leave the field out to use the shared gateway",
            )
        if name != SHARED_GATEWAY and spec.metadata.instance == 0:
            raise SpecError.one(
                "metadata.instance",
                f"a service on a dedicated gateway ('{name}') cannot scale to zero (as in EAS); keep "
                "at least 1 instance, stop it with `openeas stop`, or move it to the shared gateway",
            )

    # -- routes ----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "region": self.region})

    async def create(self, request: Request) -> Response:
        data = await self.body_json(request)
        spec = parse_service_spec(data)
        await self.check_binding(spec)
        stored = spec.to_json()
        stored.pop("token", None)  # the token lives in its own column
        token = spec.token or new_token()
        try:
            svc = await self.db(self.registry.create_service, spec.name, stored, token, spec.gateway_name)
        except AlreadyExists:
            raise ApiError(
                409,
                "ServiceAlreadyExists",
                f"a service named '{spec.name}' exists already; change it with `openeas modify "
                f"{spec.name}`, or delete it first",
                name=spec.name,
            ) from None
        log.info("service %s created", spec.name)
        await ensure_group(self, svc)
        self.ctx.reconciler.wake()
        return JSONResponse(await self.view(svc), status_code=201)

    async def list_services(self, request: Request) -> Response:
        services = await self.db(self.registry.list_services)
        instances = await self.db(self.registry.list_instances)
        bases = {g.name: self.bases(g) for g in await self.db(self.registry.list_gateways)}
        observed = self.ctx.reconciler.observed_revision
        views = [
            service_view(
                s,
                [i for i in instances if i.service == s.name],
                bases.get(s.gateway) or self.bases(None),
                self.region,
                observed(s.name),
            )
            for s in services
        ]
        return JSONResponse({"services": views, "total": len(views)})

    async def describe(self, request: Request) -> Response:
        svc = await self.get_service(self.check_region(request))
        return JSONResponse(await self.view(svc))

    async def modify(self, request: Request) -> Response:
        name = self.check_region(request)
        body = await self.body_json(request)
        patch, assignments = read_modify_body(body, "spec", "metadata.instance=2")
        svc = await self.get_service(name)
        merged = apply_modify({**svc.spec, "token": svc.token}, patch, assignments)
        return await self.apply(svc, merged)

    async def apply(self, svc: ServiceRecord, merged: dict[str, Any], note: str | None = None) -> Response:
        new_name = (
            merged.get("metadata", {}).get("name") if isinstance(merged.get("metadata"), dict) else None
        )
        if new_name != svc.name:
            raise SpecError.one(
                "metadata.name", "a service cannot be renamed; create a new service and delete this one"
            )
        spec = parse_service_spec(merged)
        await self.check_binding(spec)
        stored = spec.to_json()
        stored.pop("token", None)
        token = spec.token or new_token()  # "token": null asks for a fresh one
        if (stored, token, spec.gateway_name) == (svc.spec, svc.token, svc.gateway):
            return JSONResponse(await self.view(svc))  # nothing changes: no new revision
        # a new version unless only the instance count (or the token) changed
        changed = version_note(svc.spec, stored)
        try:
            svc = await self.db(
                self.registry.update_service,
                svc.name,
                spec=stored,
                token=token,
                gateway=spec.gateway_name,
                version_note=(note or changed) if changed else None,
            )
        except NotFound:
            raise ApiError(404, "ServiceNotFound", f"service '{svc.name}' was deleted meanwhile") from None
        log.info("service %s modified (revision %d)", svc.name, svc.revision)
        await ensure_group(self, svc)
        self.ctx.reconciler.wake()
        return JSONResponse(await self.view(svc))

    async def delete(self, request: Request) -> Response:
        name = self.check_region(request)
        await self.get_service(name)
        with contextlib.suppress(NotFound):  # a concurrent delete: the outcome is the same
            await self.db(self.registry.delete_service, name)
        log.info("service %s deleted; stopping its instances", name)
        await self.ctx.reconciler.forget(name)
        return JSONResponse({"name": name, "deleted": True})

    async def stop(self, request: Request) -> Response:
        svc = await self.get_service(self.check_region(request))
        if svc.desired != "stopped":
            svc = await self.db(
                self.registry.update_service, svc.name, desired="stopped", status="Stopped", message=""
            )
            log.info("service %s stopped", svc.name)
            self.ctx.reconciler.wake()
        return JSONResponse(await self.view(svc))

    async def start(self, request: Request) -> Response:
        svc = await self.get_service(self.check_region(request))
        if svc.desired != "running":
            svc = await self.db(
                self.registry.update_service, svc.name, desired="running", status="Waiting", message=""
            )
            log.info("service %s started", svc.name)
            self.ctx.reconciler.wake()
        else:
            self.ctx.reconciler.retry_failed(svc.name)  # a failing instance is retried at once
        return JSONResponse(await self.view(svc))

    async def scale(self, request: Request) -> Response:
        name = self.check_region(request)
        body = await self.body_json(request)
        count = body.get("instance") if isinstance(body, dict) else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise SpecError.one("instance", 'send {"instance": N} with N a whole number of instances')
        return await self.scale_to(name, count)

    async def scale_to(self, name: str, count: int) -> Response:
        """Set the instance count (restart-free): `openeas scale` and the autoscaler both land here."""
        svc = await self.get_service(name)
        merged = deep_merge({**svc.spec, "token": svc.token}, {"metadata": {"instance": count}})
        return await self.apply(svc, merged)

    async def endpoints(self, request: Request) -> Response:
        svc = await self.get_service(self.check_region(request))
        bases = self.bases(await self.gateway_or_none(svc.gateway))
        return JSONResponse(
            {
                "name": svc.name,
                "endpoints": service_endpoints(bases, svc.name),
                "token": svc.token,
                "gateway": svc.gateway,
            }
        )

    async def instances(self, request: Request) -> Response:
        svc = await self.get_service(self.check_region(request))
        rows = await self.db(self.registry.list_instances, svc.name)
        return JSONResponse({"name": svc.name, "instances": [instance_view(i) for i in rows]})

    async def logs(self, request: Request) -> Response:
        svc = await self.get_service(self.check_region(request))
        raw_tail = request.query_params.get("tail", "200")
        if not raw_tail.isdigit() or not 0 < int(raw_tail) <= MAX_LOG_TAIL:
            raise ApiError(400, "InvalidRequest", f"tail is a number of lines from 1 to {MAX_LOG_TAIL}")
        tail = int(raw_tail)
        runtime = self.ctx.runtime
        with_logs = await self.db(runtime.log_instances, svc.name)
        wanted = request.query_params.get("instance")
        if wanted:
            if wanted not in with_logs:
                raise ApiError(
                    404,
                    "InstanceNotFound",
                    f"service '{svc.name}' has no log for instance '{wanted}'; instances with logs: "
                    + (", ".join(with_logs) or "none yet"),
                )
            ids = [wanted]
        else:
            live = [i.id for i in await self.db(self.registry.list_instances, svc.name)]
            ids = [i for i in live if i in with_logs] or with_logs[:1]
        logs = [{"instance": i, "lines": await self.db(runtime.read_log, svc.name, i, tail)} for i in ids]
        return JSONResponse({"name": svc.name, "logs": logs})


def create_app(ctx: ControlContext) -> Starlette:
    api = ControlApi(ctx)
    a = api.authed
    one = PREFIX + "/services/{region}/{name}"
    routes = [
        Route(PREFIX + "/health", api.health, methods=["GET"]),
        Route(PREFIX + "/services", a(api.create), methods=["POST"]),
        Route(PREFIX + "/services", a(api.list_services), methods=["GET"]),
        Route(one, a(api.describe), methods=["GET"]),
        Route(one, a(api.modify), methods=["PUT"]),
        Route(one, a(api.delete), methods=["DELETE"]),
        Route(one + "/stop", a(api.stop), methods=["POST"]),
        Route(one + "/start", a(api.start), methods=["POST"]),
        Route(one + "/scale", a(api.scale), methods=["POST"]),
        Route(one + "/endpoints", a(api.endpoints), methods=["GET"]),
        Route(one + "/instances", a(api.instances), methods=["GET"]),
        Route(one + "/logs", a(api.logs), methods=["GET"]),
        *GatewayApi(api).routes(PREFIX),
        *GroupApi(api).routes(PREFIX),
        *metrics_routes(api, PREFIX, ctx.telemetry),
        *VersionApi(api).routes(PREFIX),
    ]

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.to_json(), status_code=exc.status)

    async def on_spec_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SpecError)
        return JSONResponse(exc.to_json(), status_code=400)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            body = {
                "code": "MethodNotAllowed",
                "message": f"{request.method} is not allowed on {request.url.path}",
            }
        elif exc.status_code == 404:
            body = {
                "code": "NotFound",
                "message": f"no API route {request.method} {request.url.path}; the API is under {PREFIX}",
            }
        else:
            body = {"code": "HTTPError", "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code)

    async def on_error(request: Request, exc: Exception) -> Response:
        log_failure(log, f"{request.method} {request.url.path} failed", exc)
        return JSONResponse(
            {
                "code": "InternalError",
                "message": f"the server failed on this request ({type(exc).__name__}); see the server log",
            },
            status_code=500,
        )

    return Starlette(
        routes=[*routes, *console_routes(api, PREFIX)],  # + the web console (/console), its debug route
        exception_handlers={
            ApiError: on_api_error,
            SpecError: on_spec_error,
            HTTPException: on_http_error,
            Exception: on_error,
        },
    )


__all__ = ["ApiError", "ControlContext", "FieldProblem", "create_app", "service_view"]
