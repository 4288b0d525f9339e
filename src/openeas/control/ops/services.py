"""The service operations of the control plane: create, modify, scale, start, stop, delete,
endpoints, instances, logs, versions and rollback.

Every operation takes plain values, returns records (`ServiceRecord`, `ServiceDetails`) and
raises domain errors (`NotFoundError`, `ConflictError`, `InvalidRequestError`, `SpecError`): no
HTTP here. The REST API (control/rest/services.py), the console, the autoscaler (`scale`) and
any other API surface call these methods, so a rule lives in one place.

After a write that changes what should run, the reconciler is woken; it does the starting and
stopping (control/reconciler.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from openeas.control.context import ControlContext
from openeas.control.endpoints import gateway_bases
from openeas.control.errors import ConflictError, InvalidRequestError, NotFoundError
from openeas.control.ops.groups import group_row
from openeas.control.ops.versions import current_version, rollback_spec, version_note
from openeas.control.patches import apply_modify
from openeas.spec import ServiceSpec, SpecError, deep_merge, new_token, parse_service_spec
from openeas.store import AlreadyExists, GatewayRecord, InstanceRecord, NotFound, ServiceRecord, VersionRecord

log = logging.getLogger("openeas.control")

SHARED_GATEWAY = "shared"
MAX_LOG_TAIL = 10_000


@dataclass(frozen=True)
class ServiceDetails:
    """A service and what its views show besides the record."""

    record: ServiceRecord
    instances: list[InstanceRecord]
    bases: dict[str, str | None]  # the gateway's base URL per access method (None: off)
    observed_revision: int  # the revision the reconciler computed `status` for
    # the service has an autoscaler block and the server runs an autoscaler: the view shows
    # `autoscaler` (its last target and why; None before its first decision)
    autoscaled: bool
    autoscaler: dict[str, Any] | None


@dataclass(frozen=True)
class InstanceLog:
    instance: str
    lines: list[str]


@dataclass(frozen=True)
class VersionList:
    service: ServiceRecord
    current: int  # the version the service runs now (0: none)
    versions: list[VersionRecord]


class ServiceOps:
    def __init__(self, ctx: ControlContext):
        self.ctx = ctx
        self.registry = ctx.registry

    # -- queries ---------------------------------------------------------------------------
    async def get(self, name: str) -> ServiceRecord:
        try:
            return await asyncio.to_thread(self.registry.get_service, name)
        except NotFound:
            raise NotFoundError(
                "ServiceNotFound",
                f"there is no service named '{name}'; `openeas list` shows the services",
                name=name,
            ) from None

    async def gateway_or_none(self, name: str) -> GatewayRecord | None:
        try:
            return await asyncio.to_thread(self.registry.get_gateway, name)
        except NotFound:
            return None

    def bases(self, gateway: GatewayRecord | None) -> dict[str, str | None]:
        """The gateway's base URLs (None for an access method that is off, or no gateway)."""
        if gateway is None:
            return {"internet": None, "intranet": None}
        sup = self.ctx.gateways.get(gateway.name)
        return gateway_bases(gateway.spec, sup.bound if sup is not None else None)

    async def details(self, svc: ServiceRecord) -> ServiceDetails:
        instances = await asyncio.to_thread(self.registry.list_instances, svc.name)
        bases = self.bases(await self.gateway_or_none(svc.gateway))
        return ServiceDetails(svc, instances, bases, *self._extras(svc))

    async def describe(self, name: str) -> ServiceDetails:
        return await self.details(await self.get(name))

    async def list_all(self) -> list[ServiceDetails]:
        services = await asyncio.to_thread(self.registry.list_services)
        instances = await asyncio.to_thread(self.registry.list_instances)
        bases = {g.name: self.bases(g) for g in await asyncio.to_thread(self.registry.list_gateways)}
        by_service: dict[str, list[InstanceRecord]] = {}
        for inst in instances:
            by_service.setdefault(inst.service, []).append(inst)
        return [
            ServiceDetails(
                s,
                by_service.get(s.name, []),
                bases.get(s.gateway) or self.bases(None),
                self.observed_revision(s),
                False,  # the list shows no autoscaler block
                None,
            )
            for s in services
        ]

    def _extras(self, svc: ServiceRecord) -> tuple[int, bool, dict[str, Any] | None]:
        autoscaler = self.ctx.autoscaler
        shown = autoscaler is not None and bool(svc.spec.get("autoscaler"))
        view = autoscaler.view(svc.name) if autoscaler is not None and shown else None
        return self.observed_revision(svc), shown, view

    def observed_revision(self, svc: ServiceRecord) -> int:
        """The revision the reconciler computed `status` for. It runs on the leader only: a
        follower (control/leadership.py) reads a settled status as the current revision's
        (approximate for the moment between a modify and the leader's next pass)."""
        lead = self.ctx.leadership
        if lead is None or lead.leading:
            return self.ctx.reconciler.observed_revision(svc.name)
        return svc.revision if svc.status in ("Running", "Stopped", "Failed") else 0

    async def endpoints(self, name: str) -> tuple[ServiceRecord, dict[str, str | None]]:
        """The service and its gateway's base URLs."""
        svc = await self.get(name)
        return svc, self.bases(await self.gateway_or_none(svc.gateway))

    async def instances(self, name: str) -> tuple[ServiceRecord, list[InstanceRecord]]:
        svc = await self.get(name)
        return svc, await asyncio.to_thread(self.registry.list_instances, svc.name)

    async def logs(
        self, name: str, instance: str | None, tail: int
    ) -> tuple[ServiceRecord, list[InstanceLog]]:
        """The last `tail` lines of one instance's log, or of the live instances' logs (the newest
        log when none is live)."""
        svc = await self.get(name)
        if not 0 < tail <= MAX_LOG_TAIL:
            raise InvalidRequestError("InvalidRequest", f"tail is a number of lines from 1 to {MAX_LOG_TAIL}")
        runtime = self.ctx.runtime
        with_logs = await asyncio.to_thread(runtime.log_instances, svc.name)
        if instance:
            if instance not in with_logs:
                raise NotFoundError(
                    "InstanceNotFound",
                    f"service '{svc.name}' has no log for instance '{instance}'; instances with logs: "
                    + (", ".join(with_logs) or "none yet"),
                )
            ids = [instance]
        else:
            live = [i.id for i in await asyncio.to_thread(self.registry.list_instances, svc.name)]
            ids = [i for i in live if i in with_logs] or with_logs[:1]
        return svc, [
            InstanceLog(i, await asyncio.to_thread(runtime.read_log, svc.name, i, tail)) for i in ids
        ]

    async def versions(self, name: str) -> VersionList:
        svc = await self.get(name)
        versions = await self._versions(svc.name)
        return VersionList(svc, current_version(versions, svc.spec), versions)

    async def _versions(self, name: str) -> list[VersionRecord]:
        try:
            return await asyncio.to_thread(self.registry.list_versions, name)
        except NotFound:
            await self.get(name)  # the error that names the service
            raise

    # -- checks ----------------------------------------------------------------------------
    async def check_binding(self, spec: ServiceSpec) -> None:
        """`networking.gateway` names a gateway that exists and can serve this service."""
        name = spec.gateway_name
        gateway = await self.gateway_or_none(name)
        if gateway is None or gateway.status == "Deleting":
            gateways = await asyncio.to_thread(self.registry.list_gateways)
            known = ", ".join(g.name for g in gateways if g.status != "Deleting") or "none"
            what = "is being deleted" if gateway is not None else "does not exist"
            raise SpecError.one(
                "networking.gateway",
                f"gateway '{name}' {what} (gateways: {known}); create it first with `openeas gateway "
                "create`, or leave the field out to use the shared gateway",
            )
        if name != SHARED_GATEWAY and spec.metadata.instance == 0:
            raise SpecError.one(
                "metadata.instance",
                f"a service on a dedicated gateway ('{name}') cannot scale to zero (as in EAS); keep "
                "at least 1 instance, stop it with `openeas stop`, or move it to the shared gateway",
            )

    # -- changes ---------------------------------------------------------------------------
    async def create(self, data: Any) -> ServiceRecord:
        """Create a service from its JSON spec (status Waiting; the reconciler starts it)."""
        spec = parse_service_spec(data)
        await self.check_binding(spec)
        stored = spec.to_json()
        stored.pop("token", None)  # the token lives in its own column
        token = spec.token or new_token()
        try:
            svc = await asyncio.to_thread(
                self.registry.create_service,
                spec.name,
                stored,
                token,
                spec.gateway_name,
                group=group_row(stored),
            )
        except AlreadyExists:
            raise ConflictError(
                "ServiceAlreadyExists",
                f"a service named '{spec.name}' exists already; change it with `openeas modify "
                f"{spec.name}`, or delete it first",
                name=spec.name,
            ) from None
        log.info("service %s created", spec.name)
        self.ctx.reconciler.wake()
        return svc

    async def modify(self, name: str, patch: dict[str, Any], assignments: list[str]) -> ServiceRecord:
        """Deep-merge `patch`, then the `key=value` assignments, into the service's spec."""
        svc = await self.get(name)
        merged = apply_modify({**svc.spec, "token": svc.token}, patch, assignments)
        return await self.apply(svc, merged)

    async def scale(self, name: str, count: int) -> ServiceRecord:
        """Set the instance count (restart-free): `openeas scale` and the autoscaler both land here."""
        svc = await self.get(name)
        merged = deep_merge({**svc.spec, "token": svc.token}, {"metadata": {"instance": count}})
        return await self.apply(svc, merged)

    async def rollback(self, name: str, number: int) -> ServiceRecord:
        """Apply version `number`'s spec as a new modify (keeping the count and the token)."""
        svc = await self.get(name)
        versions = await self._versions(svc.name)
        target = next((v for v in versions if v.version == number), None)
        if target is None:
            known = ", ".join(str(v.version) for v in versions)
            raise NotFoundError(
                "VersionNotFound",
                f"service '{name}' has no version {number}; its versions are {known}",
                name=name,
                versions=[v.version for v in versions],
            )
        spec = rollback_spec(target, svc.spec, svc.token)
        return await self.apply(svc, spec, note=f"rollback to version {number}")

    async def apply(
        self, svc: ServiceRecord, merged: dict[str, Any], note: str | None = None
    ) -> ServiceRecord:
        """Validate `merged` (the whole new spec, token included) and store it; a new version
        unless only the instance count or the token changed."""
        meta = merged.get("metadata")
        new_name = meta.get("name") if isinstance(meta, dict) else None
        if new_name != svc.name:
            raise SpecError.one(
                "metadata.name", "a service cannot be renamed; create a new service and delete this one"
            )
        spec = parse_service_spec(merged)
        await self.check_binding(spec)
        stored = spec.to_json()
        stored.pop("token", None)
        token = spec.token or new_token()  # "token": null asks for a fresh one
        if (stored, token, spec.gateway_name) == (svc.spec, svc.token, svc.gateway):
            return svc  # nothing changes: no new revision
        changed = version_note(svc.spec, stored)
        try:
            svc = await asyncio.to_thread(
                self.registry.update_service,
                svc.name,
                spec=stored,
                token=token,
                gateway=spec.gateway_name,
                version_note=(note or changed) if changed else None,
                group=group_row(stored),
            )
        except NotFound:
            raise NotFoundError("ServiceNotFound", f"service '{svc.name}' was deleted meanwhile") from None
        log.info("service %s modified (revision %d)", svc.name, svc.revision)
        self.ctx.reconciler.wake()
        return svc

    async def delete(self, name: str) -> None:
        """Delete the service and stop its instances (waits for them)."""
        await self.get(name)
        with contextlib.suppress(NotFound):  # a concurrent delete: the outcome is the same
            await asyncio.to_thread(self.registry.delete_service, name)
        log.info("service %s deleted; stopping its instances", name)
        await self.ctx.reconciler.forget(name)

    async def stop(self, name: str) -> ServiceRecord:
        svc = await self.get(name)
        if svc.desired != "stopped":
            svc = await asyncio.to_thread(
                self.registry.update_service, svc.name, desired="stopped", status="Stopped", message=""
            )
            log.info("service %s stopped", svc.name)
            self.ctx.reconciler.wake()
        return svc

    async def start(self, name: str) -> ServiceRecord:
        svc = await self.get(name)
        if svc.desired != "running":
            svc = await asyncio.to_thread(
                self.registry.update_service, svc.name, desired="running", status="Waiting", message=""
            )
            log.info("service %s started", svc.name)
            self.ctx.reconciler.wake()
        else:
            self.ctx.reconciler.retry_failed(svc.name)  # a failing instance is retried at once
        return svc
