"""The gateway routes of /api/v2 (eas-reference section 10): request -> `GatewayOps` -> view.

    POST   /api/v2/gateways                        body: gateway spec -> 201 view (status Creating)
    GET    /api/v2/gateways                        -> {"gateways": [view], "total": n} (shared included)
    GET    /api/v2/gateways/{region}/{name}        -> view
    PUT    /api/v2/gateways/{region}/{name}        body: {"spec": patch} and/or {"assignments": ["k=v"]}
                                                     (deep-merged into the stored spec, re-validated)
    DELETE /api/v2/gateways/{region}/{name}        -> {"name", "deleted": true}; 409 while services
                                                     are bound to it (the message names them)

A view: name, region, type (shared | dedicated), status (Creating, Running, Failed, Deleting),
message, endpoints {internet, intranet} (base URLs, None where that access method is off),
listeners (the addresses bound now), metrics (the metrics listener of each gateway process, see
docs/metrics.md), pids, services (bound to it), spec, created_at, updated_at.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.ops import GatewayOps
from openeas.control.rest.inputs import PREFIX, RequestReader, read_modify_body
from openeas.control.rest.routes import Endpoint
from openeas.control.rest.views import gateway_view


class GatewayRoutes:
    def __init__(self, ops: GatewayOps, reader: RequestReader) -> None:
        self.ops = ops
        self.read = reader
        self.region = reader.region

    def endpoints(self) -> list[Endpoint]:
        one = PREFIX + "/gateways/{region}/{name}"
        return [
            Endpoint("POST", PREFIX + "/gateways", self.create),
            Endpoint("GET", PREFIX + "/gateways", self.list_gateways),
            Endpoint("GET", one, self.describe),
            Endpoint("PUT", one, self.modify),
            Endpoint("DELETE", one, self.delete),
        ]

    async def create(self, request: Request) -> Response:
        details = await self.ops.create(await self.read.json(request))
        return JSONResponse(gateway_view(details, self.region), status_code=201)

    async def list_gateways(self, request: Request) -> Response:
        views = [gateway_view(d, self.region) for d in await self.ops.list_all()]
        return JSONResponse({"gateways": views, "total": len(views)})

    async def describe(self, request: Request) -> Response:
        details = await self.ops.describe(self.read.name(request, "gateways"))
        return JSONResponse(gateway_view(details, self.region))

    async def modify(self, request: Request) -> Response:
        name = self.read.name(request, "gateways")
        body = await self.read.json(request)
        patch, assignments = read_modify_body(body, "gateway spec", "rate_limit=20")
        details = await self.ops.modify(name, patch, assignments)
        return JSONResponse(gateway_view(details, self.region))

    async def delete(self, request: Request) -> Response:
        name = self.read.name(request, "gateways")
        await self.ops.delete(name)
        return JSONResponse({"name": name, "deleted": True})
