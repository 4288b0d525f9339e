"""Routes of the web console: the static pages under /console and the online-debug API route
(which calls the service layer, control/ops, like every API route).

The pages need no credential to load (they hold no data); every call they make to /api/v2
carries the admin token. They are served with a strict Content-Security-Policy (scripts, styles
and connections from this origin only), so even a service name or log line that tried to inject
markup could not run code or send the token anywhere.
"""

from __future__ import annotations

from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openeas.control.console.debug import forward, parse_debug_call, pick_endpoint
from openeas.control.endpoints import service_endpoints
from openeas.control.ops import ServiceOps
from openeas.control.rest.inputs import PREFIX, RequestReader
from openeas.control.rest.routes import Endpoint

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_PATH = "/console"
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    # Revalidate on each load (ETag): an upgraded server serves its new console at once.
    ("Cache-Control", "no-cache"),
)


class SecuredStatic:
    """An ASGI app that adds SECURITY_HEADERS to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_secured)


async def to_console(request: Request) -> Response:
    return RedirectResponse(CONSOLE_PATH + "/", status_code=307)


def debug_endpoints(services: ServiceOps, reader: RequestReader) -> list[Endpoint]:
    """The console's online-debug route (control/console/debug.py), on the admin surface."""

    async def debug(request: Request) -> Response:
        name = reader.name(request)
        call = parse_debug_call(await reader.json(request))
        svc, bases = await services.endpoints(name)
        which, base = pick_endpoint(service_endpoints(bases, name), call.endpoint, name)
        return JSONResponse(await forward(base, which, svc.token, call))

    return [Endpoint("POST", PREFIX + "/services/{region}/{name}/debug", debug)]


def console_pages() -> list[BaseRoute]:
    """The console's static pages (no credential: they hold no data) and the / redirect."""
    static = SecuredStatic(StaticFiles(directory=STATIC_DIR, html=True))
    return [
        Route("/", to_console, methods=["GET", "HEAD"]),
        Route(CONSOLE_PATH, to_console, methods=["GET", "HEAD"]),
        Mount(CONSOLE_PATH, app=static, name="console"),
    ]
