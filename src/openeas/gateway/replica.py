"""A gateway replica's registration in the store: register once listening, heartbeat, unregister.

`openeas gateway run` (and `python -m openeas.gateway --replica NAME`) runs one replica of a
gateway on whatever machine it is started. The replica writes its row in `gateway_replicas`
(`Registry.register_replica`: its listener addresses, metrics addresses, start time) and then
heartbeats every `REPLICA_HEARTBEAT_S` from a thread of its own, so the control plane
(`openeas gateway desc`, telemetry) sees every replica and marks one whose heartbeat stopped as
down. A heartbeat that finds the row gone (an operator removed it) registers again. A store that
cannot be reached is logged once per outage; the replica keeps serving. On a clean stop the row
is removed.
"""

from __future__ import annotations

import logging
import threading

from openeas.store import NotFound, Registry
from openeas.store.registry import REPLICA_HEARTBEAT_S

log = logging.getLogger("openeas.gateway")


class ReplicaRegistration:
    def __init__(
        self,
        registry: Registry,
        name: str,
        gateway: str,
        addresses: dict[str, str],
        metrics_address: str,
        interval_s: float = REPLICA_HEARTBEAT_S,
    ) -> None:
        self.registry = registry
        self.name = name
        self.gateway = gateway
        self.addresses = addresses  # listener kind ("internet", "vpc") -> "host:port" callers use
        self.metrics_address = metrics_address
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openeas-gateway-replica", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Register now (an error here is the caller's: the store was readable a moment ago) and
        heartbeat from a thread."""
        self._register()
        self._thread.start()

    def _register(self) -> None:
        self.registry.register_replica(self.name, self.gateway, self.addresses, self.metrics_address)

    def beat(self) -> None:
        """One heartbeat (registering again when the row is gone)."""
        try:
            if not self.registry.heartbeat_replica(self.name):
                log.warning("replica %s was not registered any more; registering again", self.name)
                self._register()
        except Exception as exc:  # the store is away: keep serving, say so once
            if not self._failing:
                self._failing = True
                log.warning("cannot heartbeat replica %s (%s); retrying", self.name, type(exc).__name__)
            return
        if self._failing:
            self._failing = False
            log.warning("replica %s heartbeats again", self.name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        """Stop heartbeating and remove the registration (a replica that stops is not down)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.registry.delete_replica(self.name)
        except NotFound:
            pass
        except Exception as exc:
            log.warning("cannot unregister replica %s (%s); it will show down", self.name, type(exc).__name__)
