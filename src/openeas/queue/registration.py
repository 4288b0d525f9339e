"""Where each Async service's queue server listens, in the registry's database.

The queue server writes its row (and refreshes `heartbeat` every few seconds); the gateway routes
`<endpoint>` and `<endpoint>/sink` of an Async service to `url`, and the control API reaches the
operator endpoints (`/metrics`, dead letters) at `admin_url`. A table of its own: these writes
must not move the registry's change feed every few seconds. `routes_changed` compares rows so a
gateway rebuilds only when an address really moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError, ProgrammingError

from openeas.store import schema
from openeas.store.registry import CHANGE_CHANNEL, VERSION_KEY

metadata = MetaData()

queue_servers = Table(
    "queue_servers",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("url", String(255), nullable=False),  # the queue API: http://host:port
    Column("admin_url", String(255), nullable=False),  # /metrics, /_queue/*: loopback only
    Column("pid", Integer, nullable=False),
    Column("heartbeat", Float, nullable=False),
)

STALE_AFTER_S = 15.0


@dataclass(frozen=True, slots=True)
class QueueServerRecord:
    service: str
    url: str
    admin_url: str
    pid: int
    heartbeat: float

    @property
    def alive(self) -> bool:
        return time.time() - self.heartbeat < STALE_AFTER_S


def create_table(engine: Engine) -> None:
    metadata.create_all(engine)


def _bump_version(conn: Connection, service: str) -> None:
    """Move the registry's change feed, naming `service`: gateways must re-read where its queues
    are (only that service: they update their snapshot by the names the feed gives)."""
    meta = schema.meta
    version = conn.execute(
        update(meta).where(meta.c.key == VERSION_KEY).values(value=meta.c.value + 1).returning(meta.c.value)
    ).scalar_one()
    conn.execute(insert(schema.changes).values(version=version, kind="service", name=service))
    if conn.dialect.name == "postgresql":
        notify = text("SELECT pg_notify(:channel, :payload)")
        conn.execute(notify, {"channel": CHANGE_CHANNEL, "payload": str(version)})


def register(engine: Engine, service: str, url: str, admin_url: str, pid: int) -> None:
    now = time.time()
    c = queue_servers.c
    with engine.begin() as conn:
        values = {"url": url, "admin_url": admin_url, "pid": pid, "heartbeat": now}
        if conn.execute(update(queue_servers).where(c.service == service).values(**values)).rowcount == 0:
            conn.execute(insert(queue_servers).values(service=service, **values))
        _bump_version(conn, service)


def heartbeat(engine: Engine, service: str, pid: int) -> None:
    c = queue_servers.c
    with engine.begin() as conn:
        conn.execute(
            update(queue_servers).where(c.service == service, c.pid == pid).values(heartbeat=time.time())
        )


def unregister(engine: Engine, service: str, pid: int) -> None:
    c = queue_servers.c
    with engine.begin() as conn:
        if conn.execute(delete(queue_servers).where(c.service == service, c.pid == pid)).rowcount:
            _bump_version(conn, service)


def lookup(engine: Engine, service: str) -> QueueServerRecord | None:
    return all_servers(engine).get(service)


def all_servers(engine: Engine) -> dict[str, QueueServerRecord]:
    """Every registered queue server; none when no queue server ever ran (no table yet)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(queue_servers)).all()
    except (OperationalError, ProgrammingError):  # the table is made by the first queue server
        return {}
    return {r.service: QueueServerRecord(*r) for r in rows}
