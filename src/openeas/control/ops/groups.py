"""The service-group operations of the control plane (eas-reference sections 2, 3 and 6).

A group exists once a service names it in `metadata.group`: the service create and modify paths
write its row (a generated token, traffic mode `auto`) in the service's own transaction
(`group_row`; a crash cannot leave a member without its group's token), and listing groups
makes the row of any group that lacks one (services from before groups existed). Members are
the services whose spec names the group; a group with no member left is not listed (its row
stays, so its token and weights come back with a member).

`GroupOps` returns `GroupDetails` records and raises domain errors; the routes are in
control/rest/groups.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from openeas.control.context import ControlContext
from openeas.control.endpoints import gateway_bases
from openeas.control.errors import NotFoundError
from openeas.gateway.groups import TRAFFIC_MODES, check_weight, effective_weights
from openeas.spec import SpecError, new_token
from openeas.store import GroupRecord, NotFound, ServiceRecord

GROUP_FIELDS = ("traffic_mode", "weights", "token")


def group_of(spec: dict[str, Any]) -> str | None:
    """The `metadata.group` of a stored service spec (None when it names none)."""
    metadata = spec.get("metadata")
    group = metadata.get("group") if isinstance(metadata, dict) else None
    return group if isinstance(group, str) and group else None


def group_row(spec: dict[str, Any]) -> tuple[str, str] | None:
    """(name, fresh token) for the group a stored spec names: the registry writes its row in the
    same transaction as the service if it has none yet (None: no group)."""
    group = group_of(spec)
    return (group, new_token()) if group is not None else None


@dataclass(frozen=True)
class GroupMember:
    service: ServiceRecord
    ready_instances: int  # 0 while the service is stopped
    weight: int | None  # configured; None when unset
    effective_weight: int
    share: float  # percent of the group's traffic now


@dataclass(frozen=True)
class GroupDetails:
    row: GroupRecord
    gateways: list[str]  # the members' gateways, the one most members use first
    bases: dict[str, str | None]  # base URLs of that gateway (the group's endpoints)
    members: list[GroupMember]


class GroupOps:
    def __init__(self, ctx: ControlContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry

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

    def _details(self, row: GroupRecord, members: list[ServiceRecord], ready: dict[str, int]) -> GroupDetails:
        """Blocking (reads the gateway record): run in a thread."""
        counts = [(s.name, ready.get(s.name, 0) if s.desired == "running" else 0) for s in members]
        effective = effective_weights(row.traffic_mode, row.weights, counts)
        total = sum(effective)
        gateways = sorted(
            {s.gateway for s in members}, key=lambda g: (-sum(s.gateway == g for s in members), g)
        )
        bases: dict[str, str | None] = {}
        if gateways:
            try:
                record = self.registry.get_gateway(gateways[0])
            except NotFound:
                bases = {"internet": None, "intranet": None}
            else:
                sup = self.ctx.gateways.get(record.name)
                bases = gateway_bases(record.spec, sup.bound if sup is not None else None)
        return GroupDetails(
            row,
            gateways,
            bases,
            [
                GroupMember(s, n, row.weights.get(s.name), w, round(100.0 * w / total, 1) if total else 0.0)
                for s, (_, n), w in zip(members, counts, effective, strict=True)
            ],
        )

    def _list(self) -> list[GroupDetails]:
        rows, members, ready = self._collect()
        return [self._details(rows[name], members[name], ready) for name in sorted(members)]

    def _one(self, name: str) -> GroupDetails:
        rows, members, ready = self._collect()
        if name not in members:
            known = ", ".join(sorted(members)) or "none"
            raise NotFoundError(
                "GroupNotFound",
                f"there is no service group named '{name}' (groups: {known}); a group exists while a "
                "service names it in metadata.group",
                name=name,
            )
        return self._details(rows[name], members[name], ready)

    async def list_all(self) -> list[GroupDetails]:
        return await asyncio.to_thread(self._list)

    async def describe(self, name: str) -> GroupDetails:
        return await asyncio.to_thread(self._one, name)

    async def modify(self, name: str, patch: dict[str, Any]) -> GroupDetails:
        """Change `traffic_mode`, `weights.<service>` (merged into the current weights) or `token`
        (None: a fresh one)."""
        current = await self.describe(name)
        values = validate_group_patch(patch, current)
        try:
            await asyncio.to_thread(self.registry.update_group, name, **values)
        except NotFound:
            raise NotFoundError("GroupNotFound", f"group '{name}' was deleted meanwhile") from None
        return await self.describe(name)


def validate_group_patch(patch: dict[str, Any], current: GroupDetails) -> dict[str, Any]:
    """The registry values for a group patch; SpecError naming the field when one is wrong."""
    unknown = set(patch) - set(GROUP_FIELDS)
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
        member_names = {m.service.name for m in current.members}
        merged = {m.service.name: m.weight for m in current.members if m.weight is not None}
        for service, weight in weights.items():
            if service not in member_names:
                raise SpecError.one(
                    f"weights.{service}",
                    f"'{service}' is not a member of group '{current.row.name}' "
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
