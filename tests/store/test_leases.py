"""The leader lease and fencing on both databases: one holder at a time, a new fencing token on
every change of holder, and writes from a holder whose term ended are refused in their own
transaction (store/leases.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openeas.store import InstanceRecord, Registry
from openeas.store.leases import Fenced, FencedRegistry, current_lease, release, try_lead
from tests.store.postgres_cluster import postgres_cluster


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if request.param == "sqlite":
        reg = Registry(f"sqlite:///{tmp_path_factory.mktemp('leases') / 'r.db'}")
        reg.create_schema()
        yield reg
        reg.close()
        return
    with postgres_cluster() as url:
        reg = Registry(url)
        reg.create_schema()
        yield reg
        reg.close()


def _inst(n: int) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(f"svc-{n}", "svc", 1, "127.0.0.1", 40000 + n, 100 + n, "ready", 0, "", now, now)


def test_one_holder_and_a_new_term_on_each_takeover(registry: Registry, tmp_path: Path) -> None:
    now = time.time()
    assert try_lead(registry, "a", 6, now) == 1
    assert try_lead(registry, "b", 6, now + 1) is None  # a leads until now + 6
    assert try_lead(registry, "a", 6, now + 2) == 1  # renewed: same term, until now + 8
    assert try_lead(registry, "b", 6, now + 7) is None
    assert try_lead(registry, "b", 6, now + 8.5) == 2  # a's lease ran out: b's term
    assert try_lead(registry, "a", 6, now + 9) is None  # a cannot renew what it lost
    lease = current_lease(registry)
    assert lease is not None and (lease.holder, lease.fencing) == ("b", 2)
    release(registry, "a", 1)  # a stale release changes nothing
    assert try_lead(registry, "a", 6, now + 10) is None
    release(registry, "b", 2)
    assert try_lead(registry, "a", 6, now + 10) == 3  # a clean stop hands over at once


def test_writes_of_an_ended_term_are_refused(registry: Registry) -> None:
    lease = current_lease(registry)
    assert lease is not None
    term = lease.fencing
    mine = FencedRegistry(registry, lambda: term)
    mine.put_instance(_inst(1))
    mine.set_status("svc", "Running")  # (no such service: no row changes, but allowed)
    # another server takes over (the lease expired while this one stalled)
    newer = try_lead(registry, "c", 6, time.time() + 3600)
    assert newer == term + 1
    version = registry.version()
    with pytest.raises(Fenced, match="ended"):
        mine.put_instance(_inst(2))
    with pytest.raises(Fenced):
        mine.delete_instance("svc-1")
    with pytest.raises(Fenced):
        mine.set_status("svc", "Failed")
    assert [i.id for i in registry.list_instances("svc")] == ["svc-1"]
    assert registry.version() == version  # nothing of the refused writes was committed
    theirs = FencedRegistry(registry, lambda: newer)
    theirs.delete_instance("svc-1")
    assert registry.list_instances("svc") == []
    with pytest.raises(Fenced, match="does not lead"):
        FencedRegistry(registry, lambda: None).put_instance(_inst(3))
    release(registry, "c", newer)
