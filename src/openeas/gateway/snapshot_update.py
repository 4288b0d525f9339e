"""Update a routing snapshot by what the change feed says changed, instead of rebuilding it whole.

`apply_changes(registry, gateway, snapshot, changes)` reads from the store only:
- each service the feed names (its record, its instances, its queue server when Async), plus the
  services routed here that mirror one of those (their mirror lists the targets' instances);
- the gateway's own record when the feed names this gateway (settings apply without a restart);
- each group the feed names or that a re-read service belongs (or belonged) to.
Everything else is carried over from the old snapshot as the same objects. A `full` change (a
write that named nothing, or a reader behind the kept history) and a snapshot that was never
built from the store (version < 0) rebuild whole with `build_snapshot`.
"""

from __future__ import annotations

from typing import Any

from openeas.gateway.groups import GroupRoute
from openeas.gateway.snapshot import (
    MirrorRoute,
    RoutingSnapshot,
    ServiceRoute,
    Upstream,
    build_snapshot,
    group_members,
    group_route,
    mirror_route,
    read_settings,
    route_of,
)
from openeas.queue import routing as queue_routing
from openeas.store import NotFound, Registry, ServiceRecord
from openeas.store.records import Changes


def apply_changes(
    registry: Registry, gateway: str, old: RoutingSnapshot, changes: Changes
) -> RoutingSnapshot:
    """`old` with what `changes` names read again; its version is `changes.version`."""
    if changes.full or old.version < 0:
        return build_snapshot(registry, gateway)
    settings, settings_error = old.settings, old.settings_error
    if gateway in changes.gateways:
        settings, settings_error = read_settings(registry, gateway)
    changed = set(changes.services)
    mirroring = {
        name
        for name, route in old.services.items()
        if route.mirror is not None and any(target in changed for target, _ in route.mirror.targets)
    }
    services = dict(old.services)
    touched_groups = set(changes.groups)
    for name in changed | mirroring:
        before = services.pop(name, None)
        if before is not None and before.group:
            touched_groups.add(before.group)
        route = read_route(registry, gateway, name)
        if route is not None:
            services[name] = route
            if route.group:
                touched_groups.add(route.group)
    groups = dict(old.groups)
    if touched_groups:
        members = group_members(services)
        for group in touched_groups:
            groups.pop(group, None)
            if group in members:
                groups[group] = read_group(registry, group, members[group])
    return RoutingSnapshot(changes.version, services, settings, settings_error, groups)


def read_route(registry: Registry, gateway: str, name: str) -> ServiceRoute | None:
    """The route of service `name` as the store has it now; None when it is gone or is routed by
    another gateway."""
    try:
        svc = registry.get_service(name)
    except NotFound:
        return None
    if svc.gateway != gateway:
        return None
    queue_server = queue_routing.async_upstream(registry, name) if queue_routing.is_async(svc.spec) else None
    return route_of(svc, ready_upstreams(registry, name), queue_server, lambda m: read_mirror(registry, m))


def ready_upstreams(registry: Registry, service: str) -> tuple[Upstream, ...]:
    return tuple(
        Upstream(i.id, i.host, i.port) for i in registry.list_instances(service) if i.state == "ready"
    )


def read_mirror(registry: Registry, mirror: Any) -> MirrorRoute | None:
    """A mirror spec with its targets' ready instances, read target by target."""
    targets = mirror.get("target") if isinstance(mirror, dict) else None
    names = [targets] if isinstance(targets, str) else targets if isinstance(targets, list) else []
    ready: dict[str, list[Upstream]] = {}
    running: set[str] = set()
    for target in names:
        if not isinstance(target, str):
            continue
        svc: ServiceRecord | None
        try:
            svc = registry.get_service(target)
        except NotFound:
            svc = None
        if svc is not None and svc.desired == "running":
            running.add(target)
            ready[target] = list(ready_upstreams(registry, target))
    return mirror_route(mirror, ready, running)


def read_group(registry: Registry, name: str, members: list[str]) -> GroupRoute:
    try:
        row = registry.get_group(name)
    except NotFound:
        row = None
    return group_route(name, members, row)
