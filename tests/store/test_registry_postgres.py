"""The same registry, on a real PostgreSQL server: the embedded default is not the only engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openeas.gateway.snapshot import build_snapshot
from openeas.store import AlreadyExists, Registry
from tests.store.postgres_cluster import postgres_cluster
from tests.store.test_registry import _inst, check_group_rows, check_versions


@pytest.fixture(scope="module")
def pg_registry() -> Iterator[Registry]:
    with postgres_cluster() as url:
        reg = Registry(url)
        reg.create_schema()
        try:
            yield reg
        finally:
            reg.close()


def test_registry_on_postgres(pg_registry: Registry) -> None:
    reg = pg_registry
    reg.create_schema()  # idempotent
    v0 = reg.version()
    reg.put_gateway("shared", {"listen": {"internet": "127.0.0.1:1"}})
    reg.create_service("a", {"metadata": {"name": "a"}}, "tok-a" * 4, "shared")
    with pytest.raises(AlreadyExists):
        reg.create_service("a", {}, "x" * 20, "shared")
    reg.put_instance(_inst("a", 1))
    reg.put_instance(_inst("a", 1, state="unready"))  # update in place
    assert [i.state for i in reg.list_instances("a")] == ["unready"]
    reg.put_instance(_inst("a", 1))
    assert reg.version() > v0
    other = Registry(reg.url)  # a second process's view
    snap = build_snapshot(other, "shared")
    assert [u.port for u in snap.services["a"].upstreams] == [9001]
    reg.update_service("a", spec={"metadata": {"name": "a", "instance": 3}})
    assert other.get_service("a").revision == 2
    reg.delete_service("a")
    assert other.list_services() == []
    other.close()


def test_versions_on_postgres(pg_registry: Registry) -> None:
    check_versions(pg_registry)


def test_group_row_written_with_the_service_on_postgres(pg_registry: Registry) -> None:
    check_group_rows(pg_registry)
