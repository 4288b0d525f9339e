"""The service-group routes of the control API (eas-reference sections 2, 3 and 6).

    GET /api/v2/groups                      -> {"groups": [view], "total": n}
    GET /api/v2/groups/{region}/{name}      -> view
    PUT /api/v2/groups/{region}/{name}      body: {"assignments": ["weights.svc=90",
                                              "traffic_mode=customized", "token=..."]} and/or
                                              {"spec": {"traffic_mode": ..., "weights": {...}, "token": ...}}

A group exists once a service names it in `metadata.group`: the service create and modify paths
call `ensure_group` (a row with a generated token, traffic mode `auto`), and listing groups makes
the row of any group that lacks one (services from before groups existed). Members are the
services whose spec names the group; a group with no member left is not listed (its row stays,
so its token and weights come back with a member).

A view: name, region, token, traffic_mode (auto | customized), endpoints {internet, vpc}
(`<base>/api/predict/<group>` on the members' gateway), members [{name, gateway, status,
ready_instances, weight (configured, None when unset), effective_weight, share (percent of group
traffic now)}], created_at, updated_at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from openeas.control.endpoints import service_endpoints
from openeas.control.errors import ApiError
from openeas.gateway.groups import DEFAULT_WEIGHT, TRAFFIC_MODES, check_weight, effective_weights
from openeas.spec import SpecError, assignments_to_patch, new_token
from openeas.store import GroupRecord, NotFound, Registry, ServiceRecord

if TYPE_CHECKING:
    from openeas.control.api import ControlApi


def group_of(spec: dict[str, Any]) -> str | None:
    """The `metadata.group` of a stored service spec (None when it names none)."""
    metadata = spec.get("metadata")
    group = metadata.get("group") if isinstance(metadata, dict) else None
    return group if isinstance(group, str) and group else None


def ensure_group_row(registry: Registry, spec: dict[str, Any]) -> None:
    """Create the row of the group `spec` names, if it has none yet (blocking: run in a thread)."""
    group = group_of(spec)
    if group is not None:
        registry.ensure_group(group, new_token())


async def ensure_group(api: ControlApi, svc: ServiceRecord) -> None:
    """What the service create / modify paths call after writing `svc`."""
    await api.db(ensure_group_row, api.registry, svc.spec)


class GroupApi:
    def __init__(self, api: ControlApi) -> None:
        self.api = api
        self.registry = api.registry

    def routes(self, prefix: str) -> list[Route]:
        a = self.api.authed
        one = prefix + "/groups/{region}/{name}"
        return [
            Route(prefix + "/groups", a(self.list_groups), methods=["GET"]),
            Route(one, a(self.describe), methods=["GET"]),
            Route(one, a(self.modify), methods=["PUT"]),
        ]

    # -- helpers ---------------------------------------------------------------------------
    def _collect(self) -> tuple[dict[str, GroupRecord], dict[str, list[ServiceRecord]], dict[str, int]]:
        """Rows, members by group, and ready instances by service (blocking)."""
        reg = self.registry
        members: dict[str, list[ServiceRecord]] = {}
        for svc in reg.list_services():
            group = group_of(svc.spec)
            if group is not None:
                members.setdefault(group, []).append(svc)
        rows = {g.name: g for g in reg.list_groups()}
        for name in members:
            if name not in rows:
                rows[name] = reg.ensure_group(name, new_token())
        ready: dict[str, int] = {}
        for inst in reg.list_instances():
            if inst.state == "ready":
                ready[inst.service] = ready.get(inst.service, 0) + 1
        return rows, members, ready

    async def view(
        self, row: GroupRecord, members: list[ServiceRecord], ready: dict[str, int]
    ) -> dict[str, Any]:
        counts = [(s.name, ready.get(s.name, 0) if s.desired == "running" else 0) for s in members]
        effective = effective_weights(row.traffic_mode, row.weights, counts)
        total = sum(effective)
        gateways = sorted(
            {s.gateway for s in members}, key=lambda g: (-sum(s.gateway == g for s in members), g)
        )
        bases = self.api.bases(await self.api.gateway_or_none(gateways[0])) if gateways else {}
        return {
            "name": row.name,
            "region": self.api.region,
            "token": row.token,
            "traffic_mode": row.traffic_mode,
            "endpoints": service_endpoints(bases, row.name),
            "gateways": gateways,
            "members": [
                {
                    "name": s.name,
                    "gateway": s.gateway,
                    "status": s.status,
                    "ready_instances": n,
                    "weight": row.weights.get(s.name),
                    "effective_weight": w,
                    "share": round(100.0 * w / total, 1) if total else 0.0,
                    "endpoint": service_endpoints(bases, f"{row.name}.{s.name}"),
                }
                for s, (_, n), w in zip(members, counts, effective, strict=True)
            ],
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    async def _one(self, name: str) -> dict[str, Any]:
        rows, members, ready = await self.api.db(self._collect)
        if name not in members:
            known = ", ".join(sorted(members)) or "none"
            raise ApiError(
                404,
                "GroupNotFound",
                f"there is no service group named '{name}' (groups: {known}); a group exists while a "
                "service names it in metadata.group",
                name=name,
            )
        return await self.view(rows[name], members[name], ready)

    # -- routes ----------------------------------------------------------------------------
    async def list_groups(self, request: Request) -> Response:
        rows, members, ready = await self.api.db(self._collect)
        views = [await self.view(rows[name], members[name], ready) for name in sorted(members)]
        return JSONResponse({"groups": views, "total": len(views)})

    async def describe(self, request: Request) -> Response:
        name = self.api.check_region(request, "groups")
        return JSONResponse(await self._one(name))

    async def modify(self, request: Request) -> Response:
        name = self.api.check_region(request, "groups")
        body = await self.api.body_json(request)
        if not isinstance(body, dict) or not body or set(body) - {"spec", "assignments"}:
            raise ApiError(
                400,
                "InvalidRequest",
                'send {"assignments": ["weights.<service>=90", "traffic_mode=customized"]} and/or '
                '{"spec": {"traffic_mode": "customized", "weights": {"<service>": 90}}}',
            )
        patch = body.get("spec", {})
        assignments = body.get("assignments", [])
        if not isinstance(patch, dict):
            raise SpecError.one("(top level)", "the group patch must be a JSON object")
        if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
            raise ApiError(400, "InvalidRequest", '"assignments" is a list of "key=value" strings')
        current = await self._one(name)
        merged: dict[str, Any] = dict(patch)
        for key, value in assignments_to_patch(assignments).items():
            if key == "weights" and isinstance(value, dict) and isinstance(merged.get("weights"), dict):
                merged["weights"] = {**merged["weights"], **value}
            else:
                merged[key] = value
        values = self._validate(merged, current)
        try:
            await self.api.db(self.registry.update_group, name, **values)
        except NotFound:
            raise ApiError(404, "GroupNotFound", f"group '{name}' was deleted meanwhile") from None
        return JSONResponse(await self._one(name))

    @staticmethod
    def _validate(patch: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """The registry values for a group patch; SpecError naming the field when one is wrong."""
        unknown = set(patch) - {"traffic_mode", "weights", "token"}
        if unknown:
            field = sorted(unknown)[0]
            raise SpecError.one(field, "unknown field; a group has traffic_mode, weights.<service> and token")
        values: dict[str, Any] = {}
        if "traffic_mode" in patch:
            mode = patch["traffic_mode"]
            if mode not in TRAFFIC_MODES:
                raise SpecError.one("traffic_mode", f"is auto or customized, not {mode!r}")
            values["traffic_mode"] = mode
        if "token" in patch:
            token = patch["token"]
            if token is None:
                token = new_token()
            if not isinstance(token, str) or len(token) < 8 or any(c.isspace() for c in token):
                raise SpecError.one("token", "is a string of at least 8 characters without spaces")
            values["token"] = token
        if "weights" in patch:
            weights = patch["weights"]
            if not isinstance(weights, dict):
                raise SpecError.one("weights", "is an object {service: weight}; use -D weights.<service>=N")
            member_names = {m["name"] for m in current["members"]}
            merged = {m["name"]: m["weight"] for m in current["members"] if m["weight"] is not None}
            for service, weight in weights.items():
                if service not in member_names:
                    raise SpecError.one(
                        f"weights.{service}",
                        f"'{service}' is not a member of group '{current['name']}' "
                        f"(members: {', '.join(sorted(member_names))})",
                    )
                try:
                    merged[service] = check_weight(weight)
                except ValueError as exc:
                    raise SpecError.one(f"weights.{service}", str(exc)) from None
            values["weights"] = merged
        if not values:
            raise SpecError.one("(top level)", "nothing to change")
        return values


__all__ = ["DEFAULT_WEIGHT", "GroupApi", "ensure_group", "ensure_group_row", "group_of"]
