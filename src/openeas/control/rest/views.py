"""The JSON shapes of /api/v2: records of the service layer (control/ops) -> plain dicts.

Pure functions, no I/O. A service view: name, region, status, message, desired_state, instance,
running_instances, token, gateway, endpoints {internet, vpc} (both keys always present; None
where the gateway has that access method off), spec, warnings, created_at, updated_at, revision,
observed_revision (the revision `status` was computed for), and `autoscaler` on `desc` of an
autoscaled service. Group and gateway views are described in docs/traffic.md and
docs/gateways.md.
"""

from __future__ import annotations

from typing import Any

from openeas.control.endpoints import gateway_bases, service_endpoints
from openeas.control.ops import GatewayDetails, GroupDetails, ServiceDetails
from openeas.control.ops.gateways import SHARED
from openeas.spec import SpecError, parse_service_spec
from openeas.store import InstanceRecord, VersionRecord


def instance_view(inst: InstanceRecord) -> dict[str, Any]:
    return {
        "id": inst.id,
        "revision": inst.revision,
        "state": inst.state,
        "host": inst.host,
        "port": inst.port,
        "pid": inst.pid,
        "restarts": inst.restarts,
        "message": inst.message,
        "started_at": inst.started_at,
        "updated_at": inst.updated_at,
    }


def service_view(details: ServiceDetails, region: str) -> dict[str, Any]:
    svc = details.record
    try:
        warnings = parse_service_spec(svc.spec).warnings()
    except SpecError:
        warnings = []
    view = {
        "name": svc.name,
        "region": region,
        "status": svc.status,
        "message": svc.message,
        "desired_state": svc.desired,
        "instance": int(svc.spec.get("metadata", {}).get("instance", 1)),
        # what the gateways route to: nothing once the service is stopped
        "running_instances": sum(1 for i in details.instances if i.state == "ready")
        if svc.desired == "running"
        else 0,
        "token": svc.token,
        "old_token": svc.old_token or None,  # set while a rotation keeps the previous token
        "gateway": svc.gateway,
        "endpoints": service_endpoints(details.bases, svc.name),
        "spec": svc.spec,
        "warnings": warnings,
        "created_at": svc.created_at,
        "updated_at": svc.updated_at,
        "revision": svc.revision,
        "observed_revision": details.observed_revision,
    }
    if details.autoscaled:
        view["autoscaler"] = details.autoscaler
    return view


def version_view(record: VersionRecord, current: int) -> dict[str, Any]:
    return {
        "version": record.version,
        "created_at": record.created_at,
        "note": record.note,
        "current": record.version == current,
        "spec": record.spec,
    }


def group_view(details: GroupDetails, region: str) -> dict[str, Any]:
    row = details.row
    return {
        "name": row.name,
        "region": region,
        "token": row.token,
        "old_token": row.old_token or None,  # set while a rotation keeps the previous token
        "traffic_mode": row.traffic_mode,
        "endpoints": service_endpoints(details.bases, row.name),
        "gateways": details.gateways,
        "members": [
            {
                "name": m.service.name,
                "gateway": m.service.gateway,
                "status": m.service.status,
                "ready_instances": m.ready_instances,
                "weight": m.weight,
                "effective_weight": m.effective_weight,
                "share": m.share,
                "endpoint": service_endpoints(details.bases, f"{row.name}.{m.service.name}"),
            }
            for m in details.members
        ],
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def gateway_view(details: GatewayDetails, region: str) -> dict[str, Any]:
    record, sup = details.record, details.supervisor
    return {
        "name": record.name,
        "region": region,
        "type": "shared" if record.name == SHARED else "dedicated",
        "status": sup.status if sup is not None else record.status,
        "message": sup.message if sup is not None else "",
        "endpoints": gateway_bases(record.spec, sup.bound if sup is not None else None),
        "listeners": dict(sup.bound) if sup is not None else {},
        # host:port of each gateway process's metrics listener (GET /metrics, GET /stats)
        "metrics": sup.metrics_addresses() if sup is not None else [],
        "pids": sup.pids() if sup is not None else [],
        # replicas started with `openeas gateway run` anywhere (registered in the store)
        "replicas": [
            {
                "name": r.name,
                "addresses": r.addresses,
                "metrics_address": r.metrics_address,
                "started_at": r.started_at,
                "heartbeat_at": r.heartbeat_at,
                "up": r.up,
            }
            for r in details.replicas
        ],
        "services": details.services,
        "spec": record.spec,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
