"""Plain records returned by the registry (read-only views of rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    name: str
    spec: dict[str, Any]
    token: str
    gateway: str
    desired: str
    status: str
    message: str
    revision: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    id: str
    service: str
    revision: int
    host: str
    port: int
    pid: int | None
    state: str
    restarts: int
    message: str
    started_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    name: str
    spec: dict[str, Any]
    status: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """One registered gateway replica. `up`: its last heartbeat is recent enough (computed when
    listed, from the database's clock)."""

    name: str
    gateway: str
    addresses: dict[str, str]  # listener kind ("internet", "vpc") -> "host:port"
    metrics_address: str
    started_at: float
    heartbeat_at: float
    up: bool


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in the registry after a version: the names per kind, or `full` when the
    reader must rebuild whole (a write that named nothing, or history already pruned)."""

    version: int  # the registry's version now: pass it to the next changes_since
    services: frozenset[str] = frozenset()
    gateways: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    full: bool = False

    @property
    def empty(self) -> bool:
        return not (self.full or self.services or self.gateways or self.groups)


@dataclass(frozen=True, slots=True)
class GroupRecord:
    name: str
    token: str
    traffic_mode: str  # auto | customized
    weights: dict[str, int]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class VersionRecord:
    service: str
    version: int
    spec: dict[str, Any]
    note: str  # what the version changed ("created", "changed containers[0].env", "rollback to 1")
    created_at: float
