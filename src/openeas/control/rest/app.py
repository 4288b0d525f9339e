"""`create_app`: the control plane's Starlette app, wired in one place.

    API surfaces (control/rest/routes.py: endpoints + authenticator)
        /api/v2 + /metrics, admin token      `admin_surface` below
        more surfaces (EAS management API)   passed in as `surfaces`
    the web console's pages                  control/console/routes.py (public, static)
    error answers                            below: domain errors -> HTTP status, JSON shape

Every handler only translates: request -> one call of the service layer (control/ops) -> JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.console import console_pages, debug_endpoints
from openeas.control.context import ControlContext
from openeas.control.errors import (
    ApiError,
    ConflictError,
    ControlError,
    InvalidRequestError,
    NotFoundError,
    log_failure,
)
from openeas.control.metrics import metrics_endpoints
from openeas.control.ops import ControlOps
from openeas.control.rest.auth import AdminToken
from openeas.control.rest.cluster import cluster_endpoints
from openeas.control.rest.gateways import GatewayRoutes
from openeas.control.rest.groups import GroupRoutes
from openeas.control.rest.inputs import PREFIX, RequestReader
from openeas.control.rest.queues import QueueRoutes  # async queue hook
from openeas.control.rest.routes import ApiSurface, mount
from openeas.control.rest.services import ServiceRoutes
from openeas.control.rest.tokens import TokenRoutes
from openeas.spec import SpecError

log = logging.getLogger("openeas.control")

# The HTTP status of each domain error class (the first match in this order wins).
STATUS_OF_ERROR: tuple[tuple[type[ControlError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidRequestError, 400),
)


def status_of(exc: ControlError) -> int:
    return next((status for cls, status in STATUS_OF_ERROR if isinstance(exc, cls)), 400)


def admin_surface(ops: ControlOps, reader: RequestReader, admin_token: str) -> ApiSurface:
    """/api/v2 and /metrics: every route of the CLI and the console, behind the admin token."""
    return ApiSurface(
        "admin",
        [
            *ServiceRoutes(ops.services, reader).endpoints(),
            *GatewayRoutes(ops.gateways, reader).endpoints(),
            *GroupRoutes(ops.groups, reader).endpoints(),
            *QueueRoutes(ops.services, reader).endpoints(),  # async queue hook: openeas queue ...
            *TokenRoutes(ops.tokens, reader).endpoints(),
            *cluster_endpoints(ops.ctx.registry, ops.ctx.leadership),
            *metrics_endpoints(ops, reader, ops.ctx.telemetry),
            *debug_endpoints(ops.services, reader),
        ],
        AdminToken(admin_token),
    )


def create_app(ctx: ControlContext, surfaces: Sequence[ApiSurface] = ()) -> Starlette:
    ops = ControlOps(ctx)
    reader = RequestReader(ctx.config.region)
    routes = [
        route
        for surface in (admin_surface(ops, reader, ctx.admin_token), *surfaces)
        for route in mount(surface)
    ]
    return Starlette(
        routes=[*routes, *console_pages()],
        exception_handlers={
            ApiError: on_api_error,
            ControlError: on_control_error,
            SpecError: on_spec_error,
            HTTPException: on_http_error,
            Exception: on_error,
        },
    )


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.to_json(), status_code=exc.status)


async def on_control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    return JSONResponse(exc.to_json(), status_code=status_of(exc))


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
