"""Where the telemetry finds the gateway replicas: the metrics listeners of the replicas that are up.

Replicas started with `openeas gateway run` on other machines register their metrics addresses in
the store (`gateway/replica.py`). The telemetry reads every gateway process's `/stats` once a
second from a plain list of addresses, asked for on the event loop, so that list must not cost a
store read there: `current()` returns the list it has and, when it is older than `refresh_s`,
refreshes it from `Registry.list_replicas` in a thread of its own. A replica whose heartbeat
stopped (down) is left out; a store that cannot be read keeps the last list.
"""

from __future__ import annotations

import logging
import threading
import time

from openeas.store import Registry
from openeas.store.registry import REPLICA_HEARTBEAT_S

log = logging.getLogger("openeas.control")


class ReplicaMetrics:
    def __init__(self, registry: Registry, refresh_s: float = REPLICA_HEARTBEAT_S) -> None:
        self.registry = registry
        self.refresh_s = refresh_s
        self.addresses: list[str] = []  # host:port of each replica process's metrics listener
        self._refreshed = -float("inf")  # monotonic time of the last refresh started
        self._lock = threading.Lock()

    def refresh(self) -> None:
        try:
            replicas = self.registry.list_replicas()
        except Exception as exc:  # the store is away: keep the last list
            log.debug("cannot list the gateway replicas: %s", exc)
            return
        self.addresses = [a for r in replicas if r.up for a in r.metrics_address.split(",") if a]

    def current(self) -> list[str]:
        """The addresses known now; starts a refresh in the background when they are stale."""
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed >= self.refresh_s:
                self._refreshed = now
                threading.Thread(target=self.refresh, name="openeas-replica-metrics", daemon=True).start()
        return list(self.addresses)
