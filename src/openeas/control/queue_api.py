"""The operator's view of an Async service's queues, for `openeas queue stat|get|retry` and the console.

The control API forwards to the service's queue server (its loopback admin listener, found in the
`queue_servers` table), so only admin-token holders see dead letters or retry them; callers with
the service token use the queue API itself through the gateway.

    GET  /api/v2/services/{region}/{name}/queue                 -> stats (lengths, in flight, dead,
                                                                   oldest age, counters, sink endpoint)
    GET  /api/v2/services/{region}/{name}/queue/dead?limit=N    -> the dead letters
    POST /api/v2/services/{region}/{name}/queue/retry {"indexes": [..]} (or {}: all) -> {"retried": n}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openeas.control.errors import ApiError
from openeas.queue import registration
from openeas.spec.queue import ASYNC_TYPE

if TYPE_CHECKING:
    from openeas.control.api import ControlApi

TIMEOUT_S = 10.0


class QueueApi:
    def __init__(self, api: ControlApi) -> None:
        self.api = api

    def routes(self, prefix: str) -> list[Route]:
        a = self.api.authed
        one = prefix + "/services/{region}/{name}/queue"
        return [
            Route(one, a(self.stats), methods=["GET"]),
            Route(one + "/dead", a(self.dead), methods=["GET"]),
            Route(one + "/retry", a(self.retry), methods=["POST"]),
        ]

    async def _admin_url(self, request: Request) -> str:
        name = self.api.check_region(request)
        svc = await self.api.get_service(name)
        if svc.spec.get("metadata", {}).get("type") != ASYNC_TYPE:
            raise ApiError(
                400,
                "NotAsync",
                f"service '{name}' has no queues: only services with metadata.type \"Async\" do",
            )
        rec = await self.api.db(registration.lookup, self.api.registry.engine, name)
        if rec is None or not rec.alive:
            raise ApiError(
                503,
                "QueueServerDown",
                f"the queue server of '{name}' is not running yet (or stopped); `openeas desc {name}` "
                "shows the service's state",
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
        url = await self._admin_url(request)
        out = await self._forward("GET", url + "/_queue/stats")
        svc = await self.api.get_service(out["service"])
        view = await self.api.view(svc)
        endpoints = view.get("endpoints") or {}
        out["endpoints"] = {
            kind: ({"input": base, "sink": base + "/sink"} if base else None)
            for kind, base in endpoints.items()
        }
        return JSONResponse(out)

    async def dead(self, request: Request) -> Response:
        url = await self._admin_url(request)
        limit = request.query_params.get("limit", "100")
        if not limit.isdigit():
            raise ApiError(400, "InvalidRequest", f"limit is a whole number, got {limit!r}")
        return JSONResponse(await self._forward("GET", url + "/_queue/dead", params={"limit": limit}))

    async def retry(self, request: Request) -> Response:
        url = await self._admin_url(request)
        raw = await request.body()
        body = await self.api.body_json(request) if raw.strip() else {}
        indexes = body.get("indexes") if isinstance(body, dict) else None
        if not isinstance(body, dict) or (
            indexes is not None
            and not (isinstance(indexes, list) and all(isinstance(i, int) for i in indexes))
        ):
            raise ApiError(
                400, "InvalidRequest", 'send {"indexes": [3, 7]} to retry those, or {} for every dead letter'
            )
        payload = {} if indexes is None else {"indexes": indexes}
        return JSONResponse(await self._forward("POST", url + "/_queue/retry", json=payload))
