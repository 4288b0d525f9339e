"""Who may call an API surface: the `Authenticator` hook and the admin-token one of /api/v2.

An authenticator is awaited before every non-public route of its surface and raises `ApiError`
(401, or 403) to refuse. It is async and gets the whole request, so a signature scheme that
covers the body (the EAS management API's AccessKey signatures: Content-MD5, Date, the canonical
resource) can read it; Starlette caches the body, so the handler reads it again.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from starlette.requests import Request

from openeas.control.errors import ApiError


class Authenticator(Protocol):
    async def check(self, request: Request) -> None:
        """Return when `request` may call the route; raise ApiError (401/403) otherwise."""
        ...


class AdminToken:
    """`Authorization: Bearer <admin token>`, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def check(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token)
        if not ok:
            raise ApiError(
                401,
                "Unauthorized",
                "this API needs the admin token: send `Authorization: Bearer <token>`; the token is "
                "in the file `admin_token` of the server's data dir (the openeas CLI reads it there)",
            )
