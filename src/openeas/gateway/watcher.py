"""Follow the store's change feed: poll `meta.version`, rebuild the snapshot when it moves.

Runs in its own thread (the store client is blocking) and hands each new snapshot to the event
loop with `call_soon_threadsafe`, where the gateway swaps it in. When the store cannot be read,
the gateway keeps serving the snapshot it has; `StoreHealth` (gateway/store_health.py) logs one
warning per outage and counts failures for /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from openeas.gateway.snapshot import RoutingSnapshot, build_snapshot
from openeas.gateway.store_health import StoreHealth
from openeas.store import Registry

log = logging.getLogger("openeas.gateway")

POLL_INTERVAL_S = 0.1


class SnapshotWatcher:
    def __init__(
        self,
        registry: Registry,
        gateway_name: str,
        apply: Callable[[RoutingSnapshot], None],
        loop: asyncio.AbstractEventLoop,
        *,
        version: int = -1,
        interval_s: float = POLL_INTERVAL_S,
        health: StoreHealth | None = None,
    ) -> None:
        self.registry = registry
        self.gateway_name = gateway_name
        self.apply = apply
        self.loop = loop
        self.version = version  # the version of the snapshot being served
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openeas-gateway-watcher", daemon=True)
        self.health = health or StoreHealth(registry)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def poll_once(self) -> bool:
        """Check the feed once; True when a new snapshot was handed to the loop."""
        try:
            self.health.check_file()  # SQLite: a removed or garbled file is a failure too
            version = self.registry.version()
            if version == self.version:
                self.health.ok()
                return False
            snapshot = build_snapshot(self.registry, self.gateway_name)
        except Exception as exc:  # any store error: keep serving what we have
            self.health.failed(exc, self.version)
            return False
        self.health.ok()
        self.version = snapshot.version
        self.loop.call_soon_threadsafe(self.apply, snapshot)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()
