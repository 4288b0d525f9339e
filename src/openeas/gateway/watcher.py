"""Follow the store's change feed and update the routing snapshot by the services that changed.

Runs in its own thread (the store client is blocking). It waits on `store.feed.ChangeFeed`
(LISTEN/NOTIFY on PostgreSQL: a change reaches the gateway within milliseconds; polling every
`interval_s` on SQLite), reads again only what the feed names (`snapshot_update.apply_changes`)
and hands the new snapshot to the event loop with `call_soon_threadsafe`, where the gateway swaps
it in. When the store cannot be read, the gateway keeps serving the snapshot it has;
`StoreHealth` (gateway/store_health.py) logs one warning per outage and counts failures for
/metrics.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from openeas.gateway.snapshot import RoutingSnapshot
from openeas.gateway.snapshot_update import apply_changes
from openeas.gateway.store_health import StoreHealth
from openeas.store import Registry
from openeas.store.feed import ChangeFeed

log = logging.getLogger("openeas.gateway")

POLL_INTERVAL_S = 0.1  # SQLite (no notifications): how often the version is read
WAIT_S = 1.0  # longest wait on the feed, so a stop is seen within about this long


class SnapshotWatcher:
    def __init__(
        self,
        registry: Registry,
        gateway_name: str,
        apply: Callable[[RoutingSnapshot], None],
        loop: asyncio.AbstractEventLoop,
        *,
        version: int = -1,
        snapshot: RoutingSnapshot | None = None,
        interval_s: float = POLL_INTERVAL_S,
        health: StoreHealth | None = None,
    ) -> None:
        """`snapshot`: the one being served, which later changes update; without it, the first
        change rebuilds whole (after `version`, the version being served)."""
        self.registry = registry
        self.gateway_name = gateway_name
        self.apply = apply
        self.loop = loop
        self.snapshot = snapshot if snapshot is not None else RoutingSnapshot(version=-1)
        self.version = snapshot.version if snapshot is not None else version
        self.interval_s = interval_s
        self.feed = ChangeFeed(registry, poll_s=interval_s)
        self.updates = 0  # snapshots handed to the loop (the tests and the bench read it)
        self._failing = False  # the last look at the store failed: pace the retries
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openeas-gateway-watcher", daemon=True)
        self.health = health or StoreHealth(registry)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.feed.close()

    def poll_once(self, wait_s: float = 0.0) -> bool:
        """Look at the feed (waiting up to `wait_s` for a change); True when a new snapshot was
        handed to the loop."""
        try:
            self.health.check_file()  # SQLite: a removed or garbled file is a failure too
            changes = self.feed.wait(self.version, wait_s)
            if changes.empty:
                self.health.ok()
                return False
            snapshot = apply_changes(self.registry, self.gateway_name, self.snapshot, changes)
        except Exception as exc:  # any store error: keep serving what we have
            self._failing = True
            self.health.failed(exc, self.version)
            return False
        self._failing = False
        self.health.ok()
        self.snapshot = snapshot
        self.version = snapshot.version
        self.updates += 1
        self.loop.call_soon_threadsafe(self.apply, snapshot)
        return True

    def _run(self) -> None:
        listening = self.registry.is_postgres  # else look every interval_s (and check the file)
        while not self._stop.is_set():
            self.poll_once(WAIT_S if listening else 0.0)
            if self._failing or not listening:
                self._stop.wait(self.interval_s)  # the store is down: do not spin on errors
