"""The token-rotation routes of /api/v2 (an openeas addition; EAS has no such call):

    GET    /api/v2/tokens/{region}/{kind}/{name}        -> view
    POST   /api/v2/tokens/{region}/{kind}/{name}/rotate -> view (the new token current, the old kept)
    DELETE /api/v2/tokens/{region}/{kind}/{name}/old    -> view (the old token revoked)

`kind` is `service` or `group`. A view: kind, name, token, old_token (null when none).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from openeas.control.ops.tokens import TokenOps, TokenPair
from openeas.control.rest.inputs import PREFIX, RequestReader
from openeas.control.rest.routes import Endpoint


def token_view(pair: TokenPair) -> dict[str, str | None]:
    return {"kind": pair.kind, "name": pair.name, "token": pair.token, "old_token": pair.old_token or None}


class TokenRoutes:
    def __init__(self, ops: TokenOps, reader: RequestReader) -> None:
        self.ops = ops
        self.read = reader

    def endpoints(self) -> list[Endpoint]:
        one = PREFIX + "/tokens/{region}/{kind}/{name}"
        return [
            Endpoint("GET", one, self.show),
            Endpoint("POST", one + "/rotate", self.rotate),
            Endpoint("DELETE", one + "/old", self.revoke_old),
        ]

    def _target(self, request: Request) -> tuple[str, str]:
        return str(request.path_params["kind"]), self.read.name(request, "tokens")

    async def show(self, request: Request) -> Response:
        return JSONResponse(token_view(await self.ops.show(*self._target(request))))

    async def rotate(self, request: Request) -> Response:
        return JSONResponse(token_view(await self.ops.rotate(*self._target(request))))

    async def revoke_old(self, request: Request) -> Response:
        return JSONResponse(token_view(await self.ops.revoke_old(*self._target(request))))
