"""The route tables: what the hot path looks a service or a group path up in (no I/O).

Built by the gateway from each routing snapshot (`Gateway._install`):

- `RouteEntry`: a service as the hot path sees it: the snapshot's route, the live states of its
  instances (`instances.py`), its limits, its mirror and its instance picker (`pickers.py`);
- `GroupEntry`: a group path: `/api/predict/<G>` (pick a member by weight, `groups.py`) or
  `/api/predict/<G>.<service>` (that member, which its own token also opens);
- `group_entries`: the group paths of a snapshot, keeping each group's place in its rotation.
"""

from __future__ import annotations

from openeas.gateway.groups import GroupRoute, SmoothWeightedRR, effective_weights
from openeas.gateway.instances import UpstreamState
from openeas.gateway.limits import ServiceLimits
from openeas.gateway.mirror import ServiceMirror
from openeas.gateway.pickers import Picker, new_picker
from openeas.gateway.snapshot import ServiceRoute


class RouteEntry:
    """A service as the hot path sees it: the snapshot's route plus live upstream states."""

    __slots__ = (
        "hold",
        "instance_qps",
        "limits",
        "mirror",
        "name",
        "picker",
        "route",
        "status",
        "timeout_s",
        "token",
        "upstreams",
    )

    def __init__(
        self, route: ServiceRoute, upstreams: list[UpstreamState], limits: ServiceLimits | None = None
    ) -> None:
        self.route = route
        self.name = route.name
        self.token = route.token
        self.timeout_s = route.timeout_s
        self.status = route.status
        self.upstreams = upstreams
        self.limits = limits  # None when no service / group / concurrency limit applies
        self.instance_qps = route.instance_rate_limit
        self.picker: Picker = new_picker(route.picker)
        self.hold = route.scale_from_zero  # no instance: wait for one (Gateway.hold)
        self.mirror: ServiceMirror | None = None  # set by the gateway when the spec mirrors


class GroupEntry:
    """A group path as the hot path sees it: `/api/predict/<G>` (member None: pick by weight) or
    `/api/predict/<G>.<service>` (member: that service, which its own token also opens)."""

    __slots__ = ("member", "name", "old_token", "rr", "token")

    def __init__(
        self,
        name: str,
        token: bytes,
        rr: SmoothWeightedRR[RouteEntry],
        member: RouteEntry | None = None,
        old_token: bytes = b"",
    ) -> None:
        self.name = name
        self.token = token
        self.old_token = old_token  # accepted too while a rotation is under way
        self.rr = rr
        self.member = member

    def pick(self) -> RouteEntry | None:
        """The member this request goes to; None: no member takes group traffic now."""
        member = self.member
        return member if member is not None else self.rr.pick()


def group_entries(
    groups: dict[str, GroupRoute],
    routes: dict[bytes, RouteEntry],
    old: dict[bytes, GroupEntry] | None = None,
) -> dict[bytes, GroupEntry]:
    """The group paths: `<G>` picks a member by weight, `<G>.<service>` reaches one member.

    A group whose members and weights did not change keeps its place in the weighted rotation."""
    out: dict[bytes, GroupEntry] = {}
    for name, group in groups.items():
        members = [routes[m.encode()] for m in group.members if m.encode() in routes]
        ready = [(m.name, len(m.upstreams)) for m in members]
        weights = effective_weights(group.traffic_mode, group.weights, ready)
        key = name.encode()
        entry = out[key] = GroupEntry(
            name, group.token, SmoothWeightedRR(members, weights), old_token=group.old_token
        )
        previous = old.get(key) if old else None
        if previous is not None:
            rr, prev = entry.rr, previous.rr
            same = [m.name for m in rr.items] == [m.name for m in prev.items] and rr.weights == prev.weights
            rr.carry_over(prev, same)
        for member in members:
            out[f"{name}.{member.name}".encode()] = GroupEntry(
                name, group.token, SmoothWeightedRR([member], [1]), member, group.old_token
            )
    return out
