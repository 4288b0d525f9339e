"""The registry: services, instances, gateways, and the change feed gateways watch."""

from openeas.store.records import GatewayRecord, GroupRecord, InstanceRecord, ServiceRecord, VersionRecord
from openeas.store.registry import AlreadyExists, NotFound, Registry, sqlite_url

__all__ = [
    "AlreadyExists",
    "GatewayRecord",
    "GroupRecord",
    "InstanceRecord",
    "NotFound",
    "Registry",
    "ServiceRecord",
    "VersionRecord",
    "sqlite_url",
]
