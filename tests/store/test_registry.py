from __future__ import annotations

import time
from pathlib import Path

import pytest

from openeas.gateway.snapshot import build_snapshot, gateway_settings
from openeas.store import AlreadyExists, InstanceRecord, NotFound, Registry, sqlite_url


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    r = Registry(sqlite_url(tmp_path))
    r.create_schema()
    return r


def _inst(service: str, n: int, state: str = "ready") -> InstanceRecord:
    now = time.time()
    return InstanceRecord(f"{service}-{n}", service, 1, "127.0.0.1", 9000 + n, None, state, 0, "", now, now)


def test_writes_move_the_change_feed(reg: Registry) -> None:
    v0 = reg.version()
    reg.create_service("a", {"metadata": {"name": "a"}}, "t" * 20, "shared")
    v1 = reg.version()
    assert v1 > v0
    reg.set_status("a", "Running")  # gateways do not route on status: no bump
    assert reg.version() == v1
    reg.put_instance(_inst("a", 1))
    assert reg.version() > v1


def test_service_crud(reg: Registry) -> None:
    rec = reg.create_service("a", {"metadata": {"name": "a"}}, "t" * 20, "shared")
    assert rec.status == "Waiting" and rec.revision == 1 and rec.desired == "running"
    with pytest.raises(AlreadyExists):
        reg.create_service("a", {}, "t" * 20, "shared")
    rec = reg.update_service("a", spec={"metadata": {"name": "a", "instance": 2}})
    assert rec.revision == 2 and rec.spec["metadata"]["instance"] == 2
    assert [s.name for s in reg.list_services()] == ["a"]
    reg.put_instance(_inst("a", 1))
    reg.delete_service("a")
    assert reg.list_services() == [] and reg.list_instances() == []
    with pytest.raises(NotFound):
        reg.get_service("a")
    with pytest.raises(NotFound):
        reg.delete_service("a")


def test_snapshot_has_only_ready_instances_of_its_gateway(reg: Registry) -> None:
    reg.put_gateway("shared", {"listen": {"internet": "127.0.0.1:1", "intranet": "127.0.0.1:2"}})
    spec = {"metadata": {"name": "a", "rpc": {"keepalive": 1500}}}
    reg.create_service("a", spec, "tok-a" * 4, "shared")
    reg.create_service("b", {"metadata": {"name": "b"}}, "tok-b" * 4, "gw_other")
    reg.put_instance(_inst("a", 1))
    reg.put_instance(_inst("a", 2, state="starting"))
    snap = build_snapshot(reg, "shared")
    assert set(snap.services) == {"a"}
    route = snap.services["a"]
    assert [u.port for u in route.upstreams] == [9001]
    assert route.timeout_s == 1.5 and route.token == b"tok-a" * 4
    reg.update_service("a", desired="stopped")
    assert build_snapshot(reg, "shared").services["a"].upstreams == ()
    settings = gateway_settings(reg.get_gateway("shared"))
    assert [(x.kind, x.port) for x in settings.listeners] == [("internet", 1), ("intranet", 2)]
    assert settings.max_body_bytes == 1024 * 1024


def test_two_handles_see_each_others_writes(reg: Registry) -> None:
    """The gateway process opens its own handle on the same file (WAL)."""
    other = Registry(reg.url)
    v = other.version()
    reg.create_service("a", {"metadata": {"name": "a"}}, "t" * 20, "shared")
    assert other.version() > v
    assert other.get_service("a").token == "t" * 20


def check_versions(reg: Registry) -> None:
    """Versions: 1 at create, the next one only with a note, gone with the service. Shared with
    the PostgreSQL test."""
    reg.create_service("v", {"metadata": {"name": "v"}, "x": 1}, "t" * 20, "shared")
    assert [(r.version, r.note, r.spec["x"]) for r in reg.list_versions("v")] == [(1, "created", 1)]
    reg.update_service("v", spec={"metadata": {"name": "v", "instance": 3}, "x": 1})  # a scale: no note
    reg.update_service("v", spec={"metadata": {"name": "v"}, "x": 2}, version_note="changed x")
    versions = reg.list_versions("v")
    assert [(r.version, r.note, r.spec["x"]) for r in versions] == [(1, "created", 1), (2, "changed x", 2)]
    assert reg.get_version("v", 2).spec == {"metadata": {"name": "v"}, "x": 2}
    with pytest.raises(NotFound):
        reg.get_version("v", 3)
    # a failed write keeps neither the service change nor the version
    with pytest.raises(NotFound):
        reg.update_service("nope", spec={"x": 3}, version_note="changed x")
    assert reg.list_versions("v")[-1].version == 2
    reg.delete_service("v")
    with pytest.raises(NotFound):
        reg.list_versions("v")
    # a new service of the same name starts again at 1
    reg.create_service("v", {"metadata": {"name": "v"}, "x": 9}, "t" * 20, "shared")
    assert [(r.version, r.spec["x"]) for r in reg.list_versions("v")] == [(1, 9)]
    reg.delete_service("v")


def test_versions(reg: Registry) -> None:
    check_versions(reg)


def test_versions_of_a_service_from_before_versions(tmp_path: Path) -> None:
    """A data dir from before the versions table: the table is added at open, the service's
    spec becomes version 1 when first listed or modified."""
    import sqlite3

    url = sqlite_url(tmp_path)
    old = Registry(url)
    old.create_schema()
    old.create_service("legacy", {"metadata": {"name": "legacy"}, "x": 1}, "t" * 20, "shared")
    old.create_service("other", {"metadata": {"name": "other"}, "x": 1}, "t" * 20, "shared")
    old.close()
    with sqlite3.connect(tmp_path / "registry.db") as db:
        db.execute("DROP TABLE service_versions")
    reg = Registry(url)
    reg.create_schema()
    reg.update_service("legacy", spec={"metadata": {"name": "legacy"}, "x": 2}, version_note="changed x")
    assert [(r.version, r.spec["x"]) for r in reg.list_versions("legacy")] == [(1, 1), (2, 2)]
    assert [(r.version, r.spec["x"]) for r in reg.list_versions("other")] == [(1, 1)]
    reg.close()


def check_group_rows(reg: Registry) -> None:
    """A service and the row of the group it names are one write; an existing row is kept."""
    spec = {"metadata": {"name": "ga", "group": "grp"}}
    reg.create_service("ga", spec, "t" * 20, "shared", group=("grp", "group-token-1" * 2))
    assert reg.get_group("grp").token == "group-token-1" * 2
    changes = reg.changes_since(reg.version() - 1)
    assert changes.groups == {"grp"} and changes.services == {"ga"}
    reg.create_service(
        "gb", {"metadata": {"name": "gb", "group": "grp"}}, "u" * 20, "shared", group=("grp", "x" * 20)
    )
    assert reg.get_group("grp").token == "group-token-1" * 2  # the first row stays
    reg.update_service("gb", spec={"metadata": {"name": "gb", "group": "grp2"}}, group=("grp2", "y" * 20))
    assert reg.get_group("grp2").token == "y" * 20


def test_group_row_written_with_the_service(reg: Registry) -> None:
    check_group_rows(reg)
