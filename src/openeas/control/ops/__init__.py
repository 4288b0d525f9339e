"""The control plane's service layer: every operation an API surface offers, with no HTTP inside.

`ControlOps(ctx)` bundles the operations on services (create, modify, scale, start, stop,
delete, versions, rollback, logs), groups and gateways. They take plain values, return records
and raise the domain errors of control/errors.py (or `SpecError` for a bad spec field). The REST
API (control/rest), the console, the autoscaler and any further API surface call them.
"""

from __future__ import annotations

from openeas.control.context import ControlContext
from openeas.control.ops.gateways import GatewayDetails, GatewayOps
from openeas.control.ops.groups import GroupDetails, GroupMember, GroupOps
from openeas.control.ops.services import InstanceLog, ServiceDetails, ServiceOps, VersionList
from openeas.control.ops.tokens import TokenOps


class ControlOps:
    def __init__(self, ctx: ControlContext) -> None:
        self.ctx = ctx
        self.services = ServiceOps(ctx)
        self.groups = GroupOps(ctx)
        self.gateways = GatewayOps(ctx)
        self.tokens = TokenOps(ctx)


__all__ = [
    "ControlOps",
    "GatewayDetails",
    "GatewayOps",
    "GroupDetails",
    "GroupMember",
    "GroupOps",
    "InstanceLog",
    "ServiceDetails",
    "ServiceOps",
    "TokenOps",
    "VersionList",
]
