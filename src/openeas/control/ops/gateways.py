"""The gateway operations of the control plane: create, list, describe, modify, delete.

`GatewayOps` returns `GatewayDetails` (the record, its process supervisor, the services bound to
it) and raises domain errors; the routes (/api/v2/gateways, eas-reference section 10) are in
control/rest/gateways.py. A spec is validated whole (spec/), then against the other gateways'
listeners and the API's port, and its TLS files are loaded once, before anything is stored.

The shared gateway is configured by `openeas server` flags: it is listed and described, but PUT
and DELETE answer 409 SharedGatewayReadOnly, and the name `shared` cannot be created.

What a change needs: `listen`, `enable_internet`, `enable_intranet`, `tls`, `ssl_redirect`,
`workers` and `replicas` restart the gateway's processes (a few hundred ms without a listener);
allow-lists, `trusted_proxies`, `rate_limit`, `group_rate_limit` and `max_body_bytes` are read
by the running gateway from the store within ~100 ms; `advertise` only changes the endpoints shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openeas.control.context import ControlContext
from openeas.control.endpoints import KINDS, WILDCARD_HOSTS, access_enabled, split_hostport
from openeas.control.errors import ConflictError, NotFoundError
from openeas.control.gateways import RESTART_FIELDS, GatewaySupervisor
from openeas.control.patches import apply_modify
from openeas.spec import GatewaySpec, SpecError, parse_gateway_spec
from openeas.spec.errors import FieldProblem
from openeas.store import AlreadyExists, GatewayRecord, NotFound, ReplicaRecord

SHARED = "shared"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_RE = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def gateway_processes(spec: Mapping[str, Any]) -> int:
    """Gateway processes to run: `workers` x `replicas` (on one machine a replica is more workers
    on the same ports)."""
    workers, replicas = spec.get("workers", 1), spec.get("replicas", 1)
    w = workers if isinstance(workers, int) and workers > 0 else 1
    r = replicas if isinstance(replicas, int) and replicas > 0 else 1
    return w * r


@dataclass(frozen=True)
class GatewayDetails:
    record: GatewayRecord
    supervisor: GatewaySupervisor | None  # its processes; None before they are started
    services: list[str]  # bound to it
    replicas: list[ReplicaRecord] = dataclasses.field(default_factory=list)  # `openeas gateway run` replicas


def _overlap(host_a: str, host_b: str) -> bool:
    return host_a == host_b or host_a in WILDCARD_HOSTS or host_b in WILDCARD_HOSTS


class GatewayOps:
    def __init__(self, ctx: ControlContext):
        self.ctx = ctx
        self.registry = ctx.registry
        self.manager = ctx.gateways

    # -- queries ---------------------------------------------------------------------------
    async def get(self, name: str) -> GatewayRecord:
        try:
            return await asyncio.to_thread(self.registry.get_gateway, name)
        except NotFound:
            raise NotFoundError(
                "GatewayNotFound",
                f"there is no gateway named '{name}'; `openeas gateway list` shows the gateways",
                name=name,
            ) from None

    async def bound_services(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for svc in await asyncio.to_thread(self.registry.list_services):
            out.setdefault(svc.gateway, []).append(svc.name)
        return out

    async def details(self, record: GatewayRecord) -> GatewayDetails:
        services = (await self.bound_services()).get(record.name, [])
        replicas = await asyncio.to_thread(self.registry.list_replicas, record.name)
        return GatewayDetails(record, self.manager.get(record.name), services, replicas)

    async def describe(self, name: str) -> GatewayDetails:
        return await self.details(await self.get(name))

    async def list_all(self) -> list[GatewayDetails]:
        records = await asyncio.to_thread(self.registry.list_gateways)
        services = await self.bound_services()
        return [GatewayDetails(r, self.manager.get(r.name), services.get(r.name, [])) for r in records]

    # -- checks ----------------------------------------------------------------------------
    @staticmethod
    def read_only(name: str, what: str) -> None:
        if name == SHARED:
            raise ConflictError(
                "SharedGatewayReadOnly",
                f"the shared gateway cannot be {what} through the API: it is configured by the flags "
                "of `openeas server` (--gateway-port, --vpc-port, --internet-bind, --vpc-bind, "
                "--internet-host, --vpc-host); create a dedicated gateway for other settings",
                name=name,
            )

    def taken_addresses(self, records: list[GatewayRecord], exclude: str) -> list[tuple[str, str, int]]:
        """(owner, host, port) of every listener other than gateway `exclude`'s, and the API's."""
        config = self.ctx.config
        out = [("the control API", config.api_host, config.api_port)]
        for rec in records:
            if rec.name == exclude:
                continue
            sup = self.manager.get(rec.name)
            listen = rec.spec.get("listen") or {}
            for kind in KINDS:
                if not access_enabled(rec.spec, kind):
                    continue
                address = (sup.bound.get(kind) if sup is not None else None) or str(listen.get(kind))
                host, port = split_hostport(address)
                if port:
                    out.append((f"gateway '{rec.name}' ({kind})", host, port))
        return out

    async def validate(self, spec: GatewaySpec) -> None:
        """What the spec model cannot check alone: ports in use by other gateways, TLS files."""
        problems: list[FieldProblem] = []
        records = await asyncio.to_thread(self.registry.list_gateways)
        taken = self.taken_addresses(records, spec.name)
        mine: list[tuple[str, str, int]] = []
        for kind in KINDS:
            address = getattr(spec.listen, kind)
            if not getattr(spec, f"enable_{kind}") or not address:
                continue
            host, port = split_hostport(address)
            if not port:
                continue
            for owner, other_host, other_port in taken + mine:
                if port == other_port and _overlap(host, other_host):
                    problems.append(
                        FieldProblem(
                            f"listen.{kind}",
                            f"{address} is used by {owner} ({other_host}:{other_port}); pick another "
                            "port (or port 0 for any free one)",
                        )
                    )
                    break
            mine.append((f"this gateway's {kind} listener", host, port))
        for kind, url in spec.advertise.items():
            if kind not in KINDS:
                problems.append(FieldProblem(f"advertise.{kind}", "the keys are `internet` and `intranet`"))
            elif not re.match(r"^https?://[^/\s]+", url):
                problems.append(
                    FieldProblem(
                        f"advertise.{kind}", f"expected a base URL such as http://host:port (got {url!r})"
                    )
                )
        if spec.tls is not None:
            problems += self.tls_problems(spec)
        if problems:
            raise SpecError(problems)

    @staticmethod
    def tls_problems(spec: GatewaySpec) -> list[FieldProblem]:
        tls = spec.tls
        assert tls is not None
        problems: list[FieldProblem] = []
        for field in ("cert", "key"):
            path = getattr(tls, field)
            if not os.path.isabs(path):
                problems.append(
                    FieldProblem(
                        f"tls.{field}",
                        f"give an absolute path (got {path!r}): the gateway process reads the file; "
                        "`openeas gateway create` makes relative paths absolute",
                    )
                )
            elif not os.path.isfile(path):
                problems.append(FieldProblem(f"tls.{field}", f"no such file: {path}"))
        if not problems:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls.cert, tls.key)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                problems.append(
                    FieldProblem(
                        "tls", f"cannot load the certificate {tls.cert} with the key {tls.key}: {exc}"
                    )
                )
        for i, domain in enumerate(tls.domains):
            if not DOMAIN_RE.match(domain):
                problems.append(FieldProblem(f"tls.domains[{i}]", f"not a domain name: {domain!r}"))
        return problems

    # -- changes ---------------------------------------------------------------------------
    async def create(self, data: Any) -> GatewayDetails:
        """Validate and store a dedicated gateway's spec, and start its processes (Creating)."""
        if isinstance(data, dict) and data.get("name") == SHARED:
            raise SpecError.one(
                "name",
                "'shared' is the shared gateway's name (it always exists and is configured by the "
                "flags of `openeas server`); give the dedicated gateway another name",
            )
        spec = parse_gateway_spec(data)
        async with self.manager.lock:
            await self.validate(spec)
            try:
                record = await asyncio.to_thread(
                    self.registry.create_gateway, spec.name, spec.to_json(), "Creating"
                )
            except AlreadyExists:
                raise ConflictError(
                    "GatewayAlreadyExists",
                    f"a gateway named '{spec.name}' exists already; change it with `openeas gateway "
                    f"modify {spec.name}`, or delete it first",
                    name=spec.name,
                ) from None
            self.manager.start(spec.name, gateway_processes(record.spec))
        return await self.details(record)

    async def modify(self, name: str, patch: dict[str, Any], assignments: list[str]) -> GatewayDetails:
        """Deep-merge the patch and assignments into the stored spec; restart the processes when
        a RESTART_FIELDS field changed (the rest the running gateway reads from the store)."""
        record = await self.get(name)
        self.read_only(name, "modified")
        async with self.manager.lock:
            record = await self.get(name)
            if record.status == "Deleting":
                raise ConflictError("GatewayDeleting", f"gateway '{name}' is being deleted", name=name)
            merged = apply_modify(record.spec, patch, assignments)
            if merged.get("name") != name:
                raise SpecError.one("name", "a gateway cannot be renamed; create another one")
            spec = parse_gateway_spec(merged)
            await self.validate(spec)
            new, old = spec.to_json(), record.spec
            if new == old:
                return await self.details(record)  # nothing changes
            try:
                record = await asyncio.to_thread(self.registry.update_gateway, name, new)
            except NotFound:
                raise NotFoundError("GatewayNotFound", f"gateway '{name}' was deleted meanwhile") from None
            changed = [f for f in RESTART_FIELDS if new.get(f) != old.get(f)]
            sup = self.manager.get(name)
            if sup is None:
                self.manager.start(name, gateway_processes(new))
            elif changed:
                sup.restart(gateway_processes(new), f"{', '.join(changed)} changed")
        return await self.details(record)

    async def delete(self, name: str) -> None:
        """Stop the gateway's processes and remove it; ConflictError while services use it."""
        await self.get(name)
        self.read_only(name, "deleted")
        async with self.manager.lock:
            await self.get(name)
            services = (await self.bound_services()).get(name, [])
            if services:
                raise self.in_use(name, services)
            await asyncio.to_thread(self.registry.set_gateway_status, name, "Deleting")
            await self.manager.stop(name, "Deleting")
            services = await asyncio.to_thread(self.registry.delete_unused_gateway, name)
            if services:  # a service was bound meanwhile: keep serving it
                await asyncio.to_thread(self.registry.set_gateway_status, name, "Creating")
                record = await self.get(name)
                self.manager.start(name, gateway_processes(record.spec))
                raise self.in_use(name, services)

    @staticmethod
    def in_use(name: str, services: list[str]) -> ConflictError:
        return ConflictError(
            "GatewayInUse",
            f"gateway '{name}' still serves {len(services)} service(s): {', '.join(services)}; move "
            "each to another gateway (`openeas modify SERVICE -D networking.gateway=shared`) or "
            "delete it, then delete the gateway",
            name=name,
            services=services,
        )
