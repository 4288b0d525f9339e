"""The EAS layer's way into openeas's own control API: an in-process HTTP client.

Every EAS operation is a translation: EAS's request -> one or more calls of openeas's own routes
(`/api/v2/...`, the ones the CLI and the console use) -> EAS's response. The calls go through
the ASGI app in the same process (no socket), authenticated with the admin token, so every rule
of the control plane (spec validation, gateway binding, versions, rolling updates) applies to
EAS callers exactly as to the CLI, and there is no second copy of any of it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from starlette.types import ASGIApp

from openeas.control.eas_api.errors import EasError

BASE = "http://openeas.internal"


class NativeApi:
    def __init__(self, app: ASGIApp, admin_token: str, region: str):
        self.region = region
        self._client = httpx.AsyncClient(
            # app exceptions come back as the app's own 500 answer, not as a raise here
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),  # type: ignore[arg-type]
            base_url=BASE,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=120,
        )

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """Call an openeas route; its error becomes an EasError with the same status."""
        resp = await self._client.request(method, path, json=body, params=params)
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if resp.status_code >= 400:
            raise EasError.from_native(resp.status_code, payload)
        return payload

    @staticmethod
    def path(kind: str, region: str, name: str, action: str = "") -> str:
        """`/api/v2/<kind>/<region>/<name>[/<action>]`, the names percent-encoded."""
        one = f"/api/v2/{kind}/{quote(region, safe='')}/{quote(name, safe='')}"
        return one + (f"/{action}" if action else "")
