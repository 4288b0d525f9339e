"""The control plane's leader lease and server roster, and the fenced registry the leader writes
through.

One row of `leader_lease` (name "control") says who leads, until when, and its fencing token:
a number that grows by one each time the lease changes hands. A holder renews before `expires_at`;
any server may take an expired lease. `FencedRegistry` is the registry the leader's loops
(reconciler) write through: every write checks, in its own transaction, that the lease still
carries the fencing token it was given, so a leader that stalled past its lease (a long GC
pause, a frozen VM) and wakes up after another took over cannot write. On PostgreSQL the check
reads the row FOR SHARE, so it waits for a takeover in progress; SQLite serialises writers.

Times are the servers' clocks (time.time()): servers on several hosts need NTP-synchronised
clocks, with skew well under the lease's time to live (6 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from openeas.store import schema
from openeas.store.registry import Registry

LEASE = "control"


class Fenced(RuntimeError):
    """A write from a server that no longer holds the lease (a newer fencing token exists)."""


@dataclass(frozen=True)
class Lease:
    holder: str
    fencing: int
    expires_at: float


@dataclass(frozen=True)
class ServerEntry:
    id: str
    api: str
    pid: int
    host: str
    seen_at: float


def try_lead(registry: Registry, holder: str, ttl_s: float, now: float | None = None) -> int | None:
    """Take or renew the lease for `holder`; its fencing token when it leads, None otherwise."""
    now = time.time() if now is None else now
    table = schema.leader_lease
    for _ in range(2):  # the second round after losing an insert race
        with registry.engine.begin() as conn:
            row = conn.execute(select(table).where(table.c.name == LEASE).with_for_update()).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            table.insert().values(
                                name=LEASE, holder=holder, fencing=1, expires_at=now + ttl_s, acquired_at=now
                            )
                        )
                except IntegrityError:
                    continue
                return 1
            if row.holder == holder and row.expires_at > now:
                conn.execute(update(table).where(table.c.name == LEASE).values(expires_at=now + ttl_s))
                return int(row.fencing)
            if row.expires_at > now:
                return None  # another server leads
            fencing = int(row.fencing) + 1  # expired (or ours, expired): a new term
            conn.execute(
                update(table)
                .where(table.c.name == LEASE)
                .values(holder=holder, fencing=fencing, expires_at=now + ttl_s, acquired_at=now)
            )
            return fencing
    return None


def release(registry: Registry, holder: str, fencing: int) -> None:
    """End `holder`'s term now (a clean stop), so another server need not wait for the expiry."""
    table = schema.leader_lease
    with registry.engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.name == LEASE, table.c.holder == holder, table.c.fencing == fencing)
            .values(expires_at=0.0)
        )


def current_lease(registry: Registry) -> Lease | None:
    table = schema.leader_lease
    with registry.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.name == LEASE)).first()
    return None if row is None else Lease(row.holder, int(row.fencing), float(row.expires_at))


def check_fence(conn: Connection, fencing: int) -> None:
    """Raise Fenced unless the lease still carries `fencing` (inside the caller's transaction)."""
    table = schema.leader_lease
    stmt = select(table.c.fencing).where(table.c.name == LEASE)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    current = conn.execute(stmt).scalar()
    if current != fencing:
        raise Fenced(f"write refused: this server's leadership term {fencing} ended (now {current})")


def heartbeat(registry: Registry, entry: ServerEntry) -> None:
    table = schema.control_servers
    values = {"api": entry.api, "pid": entry.pid, "host": entry.host, "seen_at": entry.seen_at}
    with registry.engine.begin() as conn:
        if conn.execute(update(table).where(table.c.id == entry.id).values(**values)).rowcount == 0:
            conn.execute(table.insert().values(id=entry.id, **values))


def forget_server(registry: Registry, server_id: str) -> None:
    with registry.engine.begin() as conn:
        conn.execute(delete(schema.control_servers).where(schema.control_servers.c.id == server_id))


def list_servers(registry: Registry) -> list[ServerEntry]:
    table = schema.control_servers
    with registry.engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.id)).all()
    return [ServerEntry(r.id, r.api, r.pid, r.host, float(r.seen_at)) for r in rows]


class FencedRegistry(Registry):
    """The same registry (same engine), whose writes carry the leader's fencing token.

    `fence()` gives the current token (None: not leading, so every write is refused)."""

    def __init__(self, base: Registry, fence: Callable[[], int | None]) -> None:
        # the base's attributes (engine and pool included): no second pool, no second schema check
        self.__dict__.update(base.__dict__)
        self._fence = fence

    @contextmanager
    def _write(self, *changed: tuple[str, str]) -> Iterator[Connection]:
        with super()._write(*changed) as conn:
            self._check(conn)
            yield conn

    def _check(self, conn: Connection) -> None:
        fencing = self._fence()
        if fencing is None:
            raise Fenced("write refused: this server does not lead")
        check_fence(conn, fencing)

    @contextmanager
    def _quiet_write(self) -> Iterator[Connection]:
        with super()._quiet_write() as conn:
            self._check(conn)
            yield conn
