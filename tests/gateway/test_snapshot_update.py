"""The routing snapshot updated by the change feed's names equals one rebuilt whole, and reads
only the services that changed.

A real SQLite registry goes through a sequence of writes a control plane makes (create, scale,
instance ready / gone, stop, move to another gateway, groups, mirrors, token rotation, gateway
record edits, delete); after each, `apply_changes` on the previous snapshot must give the same
routes, groups and settings as `build_snapshot`. A counting registry shows that a change to one
service among many reads that service, not the whole registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openeas.gateway.snapshot import RoutingSnapshot, build_snapshot
from openeas.gateway.snapshot_update import apply_changes
from openeas.store import InstanceRecord, Registry, ServiceRecord, sqlite_url


class CountingRegistry(Registry):
    """A real registry that counts the whole-table reads a snapshot update might make."""

    whole_reads = 0
    service_reads = 0

    def list_services(self) -> list[ServiceRecord]:
        self.whole_reads += 1
        return super().list_services()

    def list_instances(self, service: str | None = None) -> list[InstanceRecord]:
        if service is None:
            self.whole_reads += 1
        return super().list_instances(service)

    def get_service(self, name: str) -> ServiceRecord:
        self.service_reads += 1
        return super().get_service(name)


@pytest.fixture()
def reg(tmp_path: Path) -> CountingRegistry:
    r = CountingRegistry(sqlite_url(tmp_path))
    r.create_schema()
    r.put_gateway("shared", {"listen": {"internet": "127.0.0.1:1", "intranet": "127.0.0.1:2"}})
    return r


def _inst(service: str, n: int, state: str = "ready") -> InstanceRecord:
    now = time.time()
    return InstanceRecord(f"{service}-{n}", service, 1, "10.0.0.1", 9000 + n, None, state, 0, "", now, now)


def _spec(name: str, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **metadata}}


def _same(a: RoutingSnapshot, b: RoutingSnapshot) -> None:
    assert a.services == b.services
    assert a.groups == b.groups
    assert (a.settings, a.settings_error) == (b.settings, b.settings_error)


def test_updates_by_name_equal_a_whole_rebuild(reg: CountingRegistry) -> None:
    steps: list[Callable[[], object]] = [
        lambda: reg.create_service("a", _spec("a"), "tok-a" * 4, "shared"),
        lambda: reg.put_instance(_inst("a", 1, "starting")),
        lambda: reg.put_instance(_inst("a", 1)),
        lambda: reg.put_instance(_inst("a", 2)),
        lambda: reg.create_service("b", _spec("b", group="g1"), "tok-b" * 4, "shared"),
        lambda: reg.ensure_group("g1", "tok-g" * 4),
        lambda: reg.put_instance(_inst("b", 1)),
        lambda: reg.create_service("c", _spec("c", group="g1"), "tok-c" * 4, "other"),
        lambda: reg.update_service("c", gateway="shared"),  # moved here: its group gains a member
        lambda: reg.update_group("g1", traffic_mode="customized", weights={"b": 30, "c": 70}),
        lambda: reg.create_service(
            "m", {**_spec("m"), "mirror": {"target": "b", "ratio": 50}}, "t" * 20, "shared"
        ),
        lambda: reg.put_instance(_inst("b", 2)),  # the mirror of m lists b's new instance
        lambda: reg.rotate_token("service", "a", "new-a" * 4),
        lambda: reg.update_service("a", desired="stopped"),
        lambda: reg.delete_instance("a-2"),
        lambda: reg.update_service("b", spec=_spec("b")),  # leaves the group
        lambda: reg.put_gateway("shared", {"listen": {"internet": "127.0.0.1:1"}, "rate_limit": 7}),
        lambda: reg.update_service("c", gateway="other"),  # moved away
        lambda: reg.delete_service("b"),
        lambda: reg.delete_gateway("shared"),
    ]
    snapshot = build_snapshot(reg, "shared")
    for i, step in enumerate(steps):
        since = snapshot.version
        step()
        changes = reg.changes_since(since)
        assert not changes.full, f"step {i} asked for a whole rebuild"
        snapshot = apply_changes(reg, "shared", snapshot, changes)
        assert snapshot.version == changes.version
        _same(snapshot, build_snapshot(reg, "shared"))
    assert snapshot.settings_error and "gone" in snapshot.settings_error


def test_one_change_among_many_reads_one_service(reg: CountingRegistry) -> None:
    for i in range(200):
        reg.create_service(f"s{i}", _spec(f"s{i}"), "t" * 20, "shared")
    snapshot = build_snapshot(reg, "shared")
    reg.whole_reads = reg.service_reads = 0
    since = snapshot.version
    reg.put_instance(_inst("s7", 1))
    updated = apply_changes(reg, "shared", snapshot, reg.changes_since(since))
    assert (reg.whole_reads, reg.service_reads) == (0, 1)
    assert [u.port for u in updated.services["s7"].upstreams] == [9001]
    assert all(updated.services[n] is snapshot.services[n] for n in snapshot.services if n != "s7")


def test_a_version_moved_without_names_rebuilds_whole(reg: CountingRegistry) -> None:
    from openeas.queue import registration

    reg.create_service("q", _spec("q"), "t" * 20, "shared")
    since = reg.version()
    registration.create_table(reg.engine)
    registration.register(reg.engine, "q", "http://10.0.0.9:7000", "http://127.0.0.1:7001", 1)
    assert reg.changes_since(since).services == frozenset({"q"})  # the queue server names its service
    with reg.engine.begin() as conn:  # a writer that moves the version alone
        from sqlalchemy import update

        from openeas.store import schema
        from openeas.store.registry import VERSION_KEY

        conn.execute(
            update(schema.meta).where(schema.meta.c.key == VERSION_KEY).values(value=schema.meta.c.value + 1)
        )
    assert reg.changes_since(since).full
