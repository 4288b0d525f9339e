"""The leader lease as one server sees it (control/leadership.py), on a real SQLite registry with
a short lease: a renewal that comes after the lease expired takes a new term. On SQLite (one server
per data dir) the server keeps leading under it, since nobody else can have held the lease; on a
shared registry the same late renewal makes the server step down."""

from __future__ import annotations

import asyncio
from pathlib import Path

from openeas.control.leadership import Leadership
from openeas.store import Registry, sqlite_url

TTL_S = 0.3


def leadership_on(tmp_path: Path) -> Leadership:
    registry = Registry(sqlite_url(tmp_path))
    registry.create_schema()
    return Leadership(registry, "http://127.0.0.1:1", ttl_s=TTL_S)


async def late_renewal(leadership: Leadership) -> tuple[int | None, int | None]:
    """Lead, let the lease expire (a starved CPU), renew: the terms before and after."""
    await leadership.attempt()
    before = leadership.fence()
    await asyncio.sleep(TTL_S * 1.5)
    await leadership.attempt()
    return before, leadership.fencing


def test_a_late_renewal_on_sqlite_keeps_leading_under_the_next_term(tmp_path: Path) -> None:
    leadership = leadership_on(tmp_path)
    before, after = asyncio.run(late_renewal(leadership))
    assert (before, after) == (1, 2)
    assert not leadership.lost.is_set()
    assert leadership.fence() == 2  # its writes carry the new term


def test_a_late_renewal_on_a_shared_registry_steps_down(tmp_path: Path) -> None:
    leadership = leadership_on(tmp_path)
    leadership.single = False  # as on PostgreSQL: another server may have led in between
    before, after = asyncio.run(late_renewal(leadership))
    assert before == 1 and after is None
    assert leadership.lost.is_set() and leadership.fence() is None
