"""The service-group routes of /api/v2 (eas-reference sections 2, 3 and 6): request ->
`GroupOps` -> view.

    GET /api/v2/groups                      -> {"groups": [view], "total": n}
    GET /api/v2/groups/{region}/{name}      -> view
    PUT /api/v2/groups/{region}/{name}      body: {"assignments": ["weights.svc=90",
                                              "traffic_mode=customized", "token=..."]} and/or
                                              {"spec": {"traffic_mode": ..., "weights": {...}, "token": ...}}

A view: name, region, token, traffic_mode (auto | customized), endpoints {internet, vpc}
(`<base>/api/predict/<group>` on the members' gateway), members [{name, gateway, status,
ready_instances, weight (configured, None when unset), effective_weight, share (percent of group
traffic now)}], created_at, updated_at.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.ops import GroupOps
from openeas.control.patches import apply_modify
from openeas.control.rest.inputs import PREFIX, RequestReader, read_modify_body
from openeas.control.rest.routes import Endpoint
from openeas.control.rest.views import group_view

USAGE = (
    'send {"assignments": ["weights.<service>=90", "traffic_mode=customized"]} and/or '
    '{"spec": {"traffic_mode": "customized", "weights": {"<service>": 90}}}'
)


class GroupRoutes:
    def __init__(self, ops: GroupOps, reader: RequestReader) -> None:
        self.ops = ops
        self.read = reader
        self.region = reader.region

    def endpoints(self) -> list[Endpoint]:
        one = PREFIX + "/groups/{region}/{name}"
        return [
            Endpoint("GET", PREFIX + "/groups", self.list_groups),
            Endpoint("GET", one, self.describe),
            Endpoint("PUT", one, self.modify),
        ]

    async def list_groups(self, request: Request) -> Response:
        views = [group_view(d, self.region) for d in await self.ops.list_all()]
        return JSONResponse({"groups": views, "total": len(views)})

    async def describe(self, request: Request) -> Response:
        details = await self.ops.describe(self.read.name(request, "groups"))
        return JSONResponse(group_view(details, self.region))

    async def modify(self, request: Request) -> Response:
        name = self.read.name(request, "groups")
        body = await self.read.json(request)
        patch, assignments = read_modify_body(body, "group", "", usage=USAGE, patch_noun="group")
        details = await self.ops.modify(name, apply_modify({}, patch, assignments))
        return JSONResponse(group_view(details, self.region))
