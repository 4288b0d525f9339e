"""Route tables: an API surface is a list of `Endpoint`s and the `Authenticator` guarding them.

`create_app` (control/rest/app.py) mounts every surface into one Starlette app. The /api/v2
surface is built by `admin_surface`; a second surface (the EAS management API with AccessKey
signatures) is one more `ApiSurface`: its own endpoints, calling the same service layer
(control/ops), its own authenticator, and, when its error JSON differs, its own `render_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openeas.control.errors import ApiError, ControlError
from openeas.control.rest.auth import Authenticator
from openeas.spec import SpecError

Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[Request, Exception], Response]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    public: bool = False  # no credential needed (the health check)


@dataclass(frozen=True)
class ApiSurface:
    name: str
    endpoints: Sequence[Endpoint]
    auth: Authenticator
    # None: errors go to the app's handlers (control/rest/app.py: the /api/v2 JSON shape)
    render_error: ErrorRenderer | None = field(default=None)


def mount(surface: ApiSurface) -> list[Route]:
    """Starlette routes for `surface`: each handler behind the surface's authenticator."""
    return [Route(e.path, _guarded(surface, e), methods=[e.method]) for e in surface.endpoints]


def _guarded(surface: ApiSurface, endpoint: Endpoint) -> Handler:
    handler, auth, render = endpoint.handler, surface.auth, surface.render_error

    async def guarded(request: Request) -> Response:
        try:
            if not endpoint.public:
                await auth.check(request)
            return await handler(request)
        except (ApiError, ControlError, SpecError) as exc:
            if render is None:
                raise
            return render(request, exc)

    return guarded
