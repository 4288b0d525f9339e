"""The service routes of /api/v2 (eas-reference section 10): request -> `ServiceOps` -> view.

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
    PUT    /api/v2/services/{region}/{name}/version      body: {"version": N}: rollback -> view

Each handler reads the request, calls one operation and renders its record; the rules are in
control/ops/services.py.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.endpoints import service_endpoints
from openeas.control.errors import ApiError
from openeas.control.ops import ServiceOps
from openeas.control.rest.inputs import PREFIX, RequestReader, read_modify_body
from openeas.control.rest.routes import Endpoint
from openeas.control.rest.views import instance_view, service_view, version_view
from openeas.spec import SpecError
from openeas.store import ServiceRecord


class ServiceRoutes:
    def __init__(self, ops: ServiceOps, reader: RequestReader) -> None:
        self.ops = ops
        self.read = reader
        self.region = reader.region

    def endpoints(self) -> list[Endpoint]:
        one = PREFIX + "/services/{region}/{name}"
        return [
            Endpoint("GET", PREFIX + "/health", self.health, public=True),
            Endpoint("POST", PREFIX + "/services", self.create),
            Endpoint("GET", PREFIX + "/services", self.list_services),
            Endpoint("GET", one, self.describe),
            Endpoint("PUT", one, self.modify),
            Endpoint("DELETE", one, self.delete),
            Endpoint("POST", one + "/stop", self.stop),
            Endpoint("POST", one + "/start", self.start),
            Endpoint("POST", one + "/scale", self.scale),
            Endpoint("GET", one + "/endpoints", self.endpoints_of),
            Endpoint("GET", one + "/instances", self.instances),
            Endpoint("GET", one + "/logs", self.logs),
            Endpoint("GET", one + "/versions", self.versions),
            Endpoint("PUT", one + "/version", self.rollback),
        ]

    async def view(self, svc: ServiceRecord, status_code: int = 200) -> Response:
        details = await self.ops.details(svc)
        return JSONResponse(service_view(details, self.region), status_code=status_code)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "region": self.region})

    async def create(self, request: Request) -> Response:
        return await self.view(await self.ops.create(await self.read.json(request)), 201)

    async def list_services(self, request: Request) -> Response:
        views = [service_view(d, self.region) for d in await self.ops.list_all()]
        return JSONResponse({"services": views, "total": len(views)})

    async def describe(self, request: Request) -> Response:
        return await self.view(await self.ops.get(self.read.name(request)))

    async def modify(self, request: Request) -> Response:
        name = self.read.name(request)
        patch, assignments = read_modify_body(await self.read.json(request), "spec", "metadata.instance=2")
        return await self.view(await self.ops.modify(name, patch, assignments))

    async def delete(self, request: Request) -> Response:
        name = self.read.name(request)
        await self.ops.delete(name)
        return JSONResponse({"name": name, "deleted": True})

    async def stop(self, request: Request) -> Response:
        return await self.view(await self.ops.stop(self.read.name(request)))

    async def start(self, request: Request) -> Response:
        return await self.view(await self.ops.start(self.read.name(request)))

    async def scale(self, request: Request) -> Response:
        name = self.read.name(request)
        body = await self.read.json(request)
        count = body.get("instance") if isinstance(body, dict) else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise SpecError.one("instance", 'send {"instance": N} with N a whole number of instances')
        return await self.view(await self.ops.scale(name, count))

    async def endpoints_of(self, request: Request) -> Response:
        svc, bases = await self.ops.endpoints(self.read.name(request))
        return JSONResponse(
            {
                "name": svc.name,
                "endpoints": service_endpoints(bases, svc.name),
                "token": svc.token,
                "gateway": svc.gateway,
            }
        )

    async def instances(self, request: Request) -> Response:
        svc, rows = await self.ops.instances(self.read.name(request))
        return JSONResponse({"name": svc.name, "instances": [instance_view(i) for i in rows]})

    async def logs(self, request: Request) -> Response:
        name = self.read.name(request)
        raw_tail = request.query_params.get("tail", "200")
        tail = int(raw_tail) if raw_tail.isdigit() else 0  # the operation says what is allowed
        svc, logs = await self.ops.logs(name, request.query_params.get("instance") or None, tail)
        return JSONResponse(
            {"name": svc.name, "logs": [{"instance": log.instance, "lines": log.lines} for log in logs]}
        )

    async def versions(self, request: Request) -> Response:
        listed = await self.ops.versions(self.read.name(request))
        return JSONResponse(
            {
                "name": listed.service.name,
                "current": listed.current,
                "versions": [version_view(v, listed.current) for v in listed.versions],
            }
        )

    async def rollback(self, request: Request) -> Response:
        name = self.read.name(request)
        body: Any = await self.read.json(request)
        number = body.get("version") if isinstance(body, dict) else None
        whole = isinstance(number, int) and not isinstance(number, bool)
        if not isinstance(body, dict) or set(body) != {"version"} or not whole:
            raise ApiError(
                400,
                "InvalidRequest",
                f'send {{"version": N}} with N the number of a version; `openeas versions {name}` lists them',
            )
        assert isinstance(number, int)
        return await self.view(await self.ops.rollback(name, number))
