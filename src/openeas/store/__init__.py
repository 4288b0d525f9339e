"""The registry: services, instances, gateways, gateway replicas, and the change feed gateways watch."""

from openeas.store.records import (
    Changes,
    GatewayRecord,
    GroupRecord,
    InstanceRecord,
    ReplicaRecord,
    ServiceRecord,
    VersionRecord,
)
from openeas.store.registry import AlreadyExists, NotFound, Registry, sqlite_url

__all__ = [
    "AlreadyExists",
    "Changes",
    "GatewayRecord",
    "GroupRecord",
    "InstanceRecord",
    "NotFound",
    "Registry",
    "ReplicaRecord",
    "ServiceRecord",
    "VersionRecord",
    "sqlite_url",
]
