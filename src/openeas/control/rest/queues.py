"""The operator's view of an Async service's queues, for `openeas queue stat|get|retry`: request ->
the service's queue server -> JSON.

The control API forwards to the service's queue server (its loopback admin listener, found in the
`queue_servers` table), so only admin-token holders see dead letters or retry them; callers with
the service token use the queue API itself through the gateway (docs/async.md).

    GET  /api/v2/services/{region}/{name}/queue                 -> stats: lengths, in flight, dead,
                                                                   oldest age, counters, endpoints
    GET  /api/v2/services/{region}/{name}/queue/dead?limit=N    -> the dead letters
    POST /api/v2/services/{region}/{name}/queue/retry {"indexes": [..]} (or {}: all) -> {"retried": n}
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.endpoints import service_endpoints
from openeas.control.errors import ApiError
from openeas.control.ops import ServiceOps
from openeas.control.rest.inputs import PREFIX, RequestReader
from openeas.control.rest.routes import Endpoint
from openeas.queue import registration
from openeas.spec.queue import ASYNC_TYPE

TIMEOUT_S = 10.0
USAGE = 'send {"indexes": [3, 7]} to retry those, or {} for every dead letter'


class QueueRoutes:
    def __init__(self, ops: ServiceOps, reader: RequestReader) -> None:
        self.ops = ops
        self.read = reader

    def endpoints(self) -> list[Endpoint]:
        one = PREFIX + "/services/{region}/{name}/queue"
        return [
            Endpoint("GET", one, self.stats),
            Endpoint("GET", one + "/dead", self.dead),
            Endpoint("POST", one + "/retry", self.retry),
        ]

    async def _admin_url(self, name: str) -> str:
        svc = await self.ops.get(name)
        if svc.spec.get("metadata", {}).get("type") != ASYNC_TYPE:
            raise ApiError(
                400,
                "NotAsync",
                f"service '{name}' has no queues: only services with metadata.type \"Async\" do",
            )
        rec = await asyncio.to_thread(registration.lookup, self.ops.registry.engine, name)
        if rec is None or not rec.alive:
            raise ApiError(
                503,
                "QueueServerDown",
                f"the queue server of '{name}' is not running (yet); `openeas desc {name}` shows the service",
            )
        return rec.admin_url

    async def _forward(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                resp = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                503, "QueueServerDown", f"the queue server did not answer ({type(exc).__name__})"
            ) from None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, "QueueError", resp.text[:500])
        return resp.json()

    async def stats(self, request: Request) -> Response:
        name = self.read.name(request)
        out = await self._forward("GET", await self._admin_url(name) + "/_queue/stats")
        svc, bases = await self.ops.endpoints(name)
        out["endpoints"] = {
            kind: ({"input": base, "sink": base + "/sink"} if base else None)
            for kind, base in service_endpoints(bases, svc.name).items()
        }
        return JSONResponse(out)

    async def dead(self, request: Request) -> Response:
        url = await self._admin_url(self.read.name(request))
        limit = request.query_params.get("limit", "100")
        if not limit.isdigit():
            raise ApiError(400, "InvalidRequest", f"limit is a whole number, got {limit!r}")
        return JSONResponse(await self._forward("GET", url + "/_queue/dead", params={"limit": limit}))

    async def retry(self, request: Request) -> Response:
        url = await self._admin_url(self.read.name(request))
        body = await self.read.json(request) if (await request.body()).strip() else {}
        indexes = body.get("indexes") if isinstance(body, dict) else None
        whole = isinstance(indexes, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in indexes
        )
        if not isinstance(body, dict) or (indexes is not None and not whole):
            raise ApiError(400, "InvalidRequest", USAGE)
        payload = {} if indexes is None else {"indexes": indexes}
        return JSONResponse(await self._forward("POST", url + "/_queue/retry", json=payload))
