"""Service versions and rollback (EAS: /version(s) of a service).

A version is the spec a create or a modify set. Changes of `metadata.instance` alone (scale,
the autoscaler) and start/stop make no version: they are about how many instances run, not
what they run. A rollback applies version N's spec as a new modify, through the same rolling
update, keeping the service's current token and instance count (a rollback that silently
scaled a service, or changed the secret callers hold, would surprise). It records a new version
("rollback to N"), so history only grows.

    GET /api/v2/services/{region}/{name}/versions  -> {"name", "current", "versions": [...]}
    PUT /api/v2/services/{region}/{name}/version    {"version": N} -> the service view
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openeas.control.errors import ApiError
from openeas.store import NotFound, VersionRecord

if TYPE_CHECKING:
    from openeas.control.api import ControlApi

MAX_FIELDS_IN_NOTE = 4


def versioned_part(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as a version sees it: without the instance count."""
    data = copy.deepcopy(spec)
    meta = data.get("metadata")
    if isinstance(meta, dict):
        meta.pop("instance", None)
    return data


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths (`containers[0].env`) where `new` differs from `old`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out += changed_fields(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += changed_fields(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [path or "(spec)"]


def version_note(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What a modify from `old` to `new` changed, or None when it makes no version."""
    fields = changed_fields(versioned_part(old), versioned_part(new))
    if not fields:
        return None
    shown = ", ".join(fields[:MAX_FIELDS_IN_NOTE])
    more = len(fields) - MAX_FIELDS_IN_NOTE
    return f"changed {shown}" + (f" and {more} more" if more > 0 else "")


def version_view(record: VersionRecord, current: int) -> dict[str, Any]:
    return {
        "version": record.version,
        "created_at": record.created_at,
        "note": record.note,
        "current": record.version == current,
        "spec": record.spec,
    }


class VersionApi:
    def __init__(self, api: ControlApi) -> None:
        self.api = api
        self.registry = api.registry

    def routes(self, prefix: str) -> list[Route]:
        a = self.api.authed
        one = prefix + "/services/{region}/{name}"
        return [
            Route(one + "/versions", a(self.list_versions), methods=["GET"]),
            Route(one + "/version", a(self.rollback), methods=["PUT"]),
        ]

    async def _versions(self, name: str) -> list[VersionRecord]:
        try:
            return await self.api.db(self.registry.list_versions, name)
        except NotFound:
            await self.api.get_service(name)  # the 404 that names the service
            raise

    async def list_versions(self, request: Request) -> Response:
        svc = await self.api.get_service(self.api.check_region(request))
        versions = await self._versions(svc.name)
        current = _current(versions, svc.spec)
        return JSONResponse(
            {
                "name": svc.name,
                "current": current,
                "versions": [version_view(v, current) for v in versions],
            }
        )

    async def rollback(self, request: Request) -> Response:
        name = self.api.check_region(request)
        body = await self.api.body_json(request)
        number = body.get("version") if isinstance(body, dict) else None
        whole = isinstance(number, int) and not isinstance(number, bool)
        if not isinstance(body, dict) or set(body) != {"version"} or not whole:
            raise ApiError(
                400,
                "InvalidRequest",
                'send {"version": N} with N the number of a version; `openeas versions '
                f'{name}` lists them',
            )
        svc = await self.api.get_service(name)
        versions = await self._versions(svc.name)
        assert isinstance(number, int)
        target = next((v for v in versions if v.version == number), None)
        if target is None:
            known = ", ".join(str(v.version) for v in versions)
            raise ApiError(
                404,
                "VersionNotFound",
                f"service '{name}' has no version {number}; its versions are {known}",
                name=name,
                versions=[v.version for v in versions],
            )
        spec = copy.deepcopy(target.spec)
        meta = spec.setdefault("metadata", {})
        meta["instance"] = svc.spec.get("metadata", {}).get("instance", 1)  # keep the current count
        spec["token"] = svc.token  # keep the current token
        return await self.api.apply(svc, spec, note=f"rollback to version {number}")


def _current(versions: list[VersionRecord], spec: dict[str, Any]) -> int:
    """The newest version whose spec the service runs now (0: none does)."""
    now = versioned_part(spec)
    for v in reversed(versions):
        if versioned_part(v.spec) == now:
            return v.version
    return 0
