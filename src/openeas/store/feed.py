"""Waiting for registry changes: LISTEN/NOTIFY on PostgreSQL, polling on SQLite and as fall-back.

    feed = ChangeFeed(registry)
    changes = feed.wait(since=version, timeout=30)      # or: await feed.next(version, 30)
    ... update what changes.services / .gateways / .groups name (all of it when changes.full) ...
    version = changes.version

On PostgreSQL the feed holds one connection of its own in LISTEN on CHANGE_CHANNEL; every
registry write sends NOTIFY at commit, so `wait` returns within milliseconds of a change. It
still looks at the registry every `fallback_s` (a notification lost with a broken connection
must not stall a gateway), and reconnects on the next wait when the connection broke. Elsewhere
(SQLite: one machine) it polls the version every `poll_s`. Either way what changed comes from
`Registry.changes_since`, never from the notification itself, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from openeas.store.records import Changes
from openeas.store.registry import CHANGE_CHANNEL, Registry

POLL_S = 0.5
FALLBACK_S = 5.0


def _libpq_url(url: str) -> str:
    """SQLAlchemy's `postgresql+psycopg://...` as libpq takes it (`postgresql://...`)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class ChangeFeed:
    def __init__(self, registry: Registry, poll_s: float = POLL_S, fallback_s: float = FALLBACK_S):
        self.registry = registry
        self.poll_s = poll_s
        self.fallback_s = fallback_s
        self._conn: Any = None  # psycopg.Connection in LISTEN, on PostgreSQL

    @property
    def listening(self) -> bool:
        """True while a LISTEN connection is open (PostgreSQL); False: polling."""
        return self._conn is not None and not self._conn.closed

    def _listen(self) -> None:
        if not self.registry.is_postgres or self.listening:
            return
        import psycopg

        try:
            conn = psycopg.connect(_libpq_url(self.registry.url), autocommit=True, connect_timeout=5)
            conn.execute(f"LISTEN {CHANGE_CHANNEL}")
        except psycopg.Error:
            self._conn = None  # poll until the next wait tries again
            return
        self._conn = conn

    def _sleep(self, seconds: float) -> None:
        """Until a notification arrives (LISTEN) or `seconds` passed."""
        if not self.listening:
            time.sleep(min(seconds, self.poll_s))
            return
        import psycopg

        try:
            for _ in self._conn.notifies(timeout=min(seconds, self.fallback_s), stop_after=1):
                break
        except psycopg.Error:
            self.close()  # the connection broke: poll, and reconnect on the next wait

    def wait(self, since: int, timeout: float) -> Changes:
        """The changes after version `since`, as soon as there are some, or after `timeout`
        seconds (then possibly empty)."""
        self._listen()
        deadline = time.monotonic() + timeout
        while True:
            changes = self.registry.changes_since(since)
            left = deadline - time.monotonic()
            if not changes.empty or left <= 0:
                return changes
            self._sleep(left)

    async def next(self, since: int, timeout: float) -> Changes:
        """`wait` for an event loop (it runs in a worker thread)."""
        return await asyncio.to_thread(self.wait, since, timeout)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
