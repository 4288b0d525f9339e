"""The change feed and gateway-replica registration, on SQLite and on a real PostgreSQL server.

Measured: `changes_since` names exactly the services / gateways / groups that writes touched
(an instance write counts as its service's; status flips are not changes); a reader behind the
kept history is told to rebuild whole; on PostgreSQL a waiter is woken by NOTIFY (its poll is
set to 60 s, so only the notification can wake it within the bound), on SQLite by polling;
replicas register, heartbeat and are shown down once their heartbeat is older than the limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openeas.store import NotFound, Registry, sqlite_url
from openeas.store.feed import ChangeFeed
from tests.store.postgres_cluster import postgres_cluster
from tests.store.test_registry import _inst


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "sqlite":
        reg = Registry(sqlite_url(tmp_path))
    else:
        url = request.getfixturevalue("pg_url")
        reg = Registry(url)
        with reg.engine.begin() as conn:  # one PostgreSQL server per module: start clean
            from openeas.store import schema

            schema.metadata.drop_all(conn)
    reg.create_schema()
    try:
        yield reg
    finally:
        reg.close()


def test_changes_name_what_was_written(registry: Registry) -> None:
    reg = registry
    v0 = reg.version()
    reg.put_gateway("shared", {"listen": {"internet": "127.0.0.1:1"}})
    reg.create_service("a", {"metadata": {"name": "a"}}, "tok-a" * 4, "shared")
    reg.create_service("b", {"metadata": {"name": "b"}}, "tok-b" * 4, "shared")
    ch = reg.changes_since(v0)
    assert (ch.services, ch.gateways, ch.full) == ({"a", "b"}, {"shared"}, False)
    v1 = ch.version
    assert reg.changes_since(v1).empty
    reg.put_instance(_inst("b", 1))
    reg.set_status("a", "Running")  # not a routing change
    ch = reg.changes_since(v1)
    assert (ch.services, ch.gateways, ch.groups, ch.full) == ({"b"}, set(), set(), False)
    v2 = ch.version
    reg.delete_instance(_inst("b", 1).id)
    reg.ensure_group("g", "tok-g" * 4)
    ch = reg.changes_since(v2)
    assert (ch.services, ch.groups) == ({"b"}, {"g"})
    reg.delete_service("a")
    assert reg.changes_since(ch.version).services == {"a"}


def test_a_reader_behind_the_kept_history_rebuilds_whole(registry: Registry) -> None:
    reg = Registry(registry.url, change_keep=3)
    try:
        v0 = reg.version()
        for i in range(6):
            reg.create_service(f"s{i}", {"metadata": {"name": f"s{i}"}}, "t" * 20, "shared")
        assert reg.changes_since(v0).full
        recent = reg.changes_since(reg.version() - 2)
        assert (recent.full, recent.services) == (False, {"s4", "s5"})
    finally:
        reg.close()


def test_a_waiter_wakes_on_the_change(registry: Registry) -> None:
    # on PostgreSQL the poll is 60 s: only NOTIFY can wake the waiter within the bound below
    postgres = registry.is_postgres
    feed = ChangeFeed(registry, poll_s=60.0 if postgres else 0.1, fallback_s=60.0)
    try:
        v0 = registry.version()
        assert feed.wait(v0, timeout=0.3).empty  # nothing changed: returns at the timeout
        assert feed.listening is postgres
        writer = threading.Timer(0.5, lambda: registry.put_instance(_inst("w", 1)))
        started = time.monotonic()
        writer.start()
        ch = feed.wait(v0, timeout=30)
        took = time.monotonic() - started
        writer.join()
        assert ch.services == {"w"} and not ch.full
        assert took < 5, f"the waiter woke {took:.1f} s after a write made 0.5 s in"
    finally:
        feed.close()


def test_replicas_register_heartbeat_and_go_down(registry: Registry) -> None:
    reg = registry
    a = reg.register_replica("shared-a", "shared", {"internet": "10.0.0.1:8080"}, "10.0.0.1:9100")
    reg.register_replica(
        "shared-b", "shared", {"internet": "10.0.0.2:8080", "vpc": "10.1.0.2:8081"}, "10.0.0.2:9100"
    )
    reg.register_replica("ded-a", "dedicated", {"vpc": "10.1.0.3:8081"}, "10.1.0.3:9100")
    assert a.up and a.addresses == {"internet": "10.0.0.1:8080"} and a.metrics_address == "10.0.0.1:9100"
    assert [r.name for r in reg.list_replicas("shared")] == ["shared-a", "shared-b"]
    assert len(reg.list_replicas()) == 3
    time.sleep(1.2)
    assert reg.heartbeat_replica("shared-a") is True
    state = {r.name: r.up for r in reg.list_replicas("shared", down_after_s=1.0)}
    assert state == {"shared-a": True, "shared-b": False}
    # a restarted replica registers again: a new start time, up again
    again = reg.register_replica("shared-b", "shared", {"internet": "10.0.0.2:8080"}, "10.0.0.2:9100")
    assert again.up and again.started_at > a.started_at
    reg.delete_replica("ded-a")
    assert reg.heartbeat_replica("ded-a") is False  # gone: it must register again
    with pytest.raises(NotFound):
        reg.delete_replica("ded-a")
