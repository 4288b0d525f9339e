"""Which control server leads: a lease in the registry, renewed every 2 s, lost after 6 s.

Every `openeas server` on one registry serves the API; the one holding the lease (store/leases.py)
also runs what must run once: the reconciler, the autoscaler, telemetry and the gateway
supervisors. `Leadership.run` renews the lease (and this server's roster row) every `renew_s`;
`became_leader` is set when it takes the lease, `lost` when it no longer holds it. `fence()` is
the fencing token the leader's writes carry (store/leases.py FencedRegistry); it turns None by
itself once `ttl_s` passed since the last successful renewal, before another server can take the
lease, so a leader cut off from the database stops writing first.

On SQLite (one machine, one server per data dir) the holder name is fixed, so a restarted server
takes its own lease back at once instead of waiting for it to expire, and a server whose renewal
came late (a CPU starved for seconds) keeps leading under the new term instead of stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from openeas.store import Registry
from openeas.store.leases import ServerEntry, forget_server, heartbeat, release, try_lead

log = logging.getLogger("openeas.control")

RENEW_S = 2.0
TTL_S = 6.0
SINGLE_HOLDER = "single-server"


class Leadership:
    def __init__(
        self, registry: Registry, api_url: str, *, renew_s: float = RENEW_S, ttl_s: float = TTL_S
    ) -> None:
        self.registry = registry
        self.single = registry.url.startswith("sqlite")
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.holder = SINGLE_HOLDER if self.single else self.server_id
        self.api_url = api_url
        self.renew_s = renew_s
        self.ttl_s = ttl_s
        self.fencing: int | None = None
        self._valid_until = 0.0  # monotonic: fence() is None after it
        self.became_leader = asyncio.Event()
        self.lost = asyncio.Event()
        self._halt = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.fence() is not None

    def fence(self) -> int | None:
        """The fencing token while this server surely holds the lease, else None."""
        if self.fencing is None or time.monotonic() >= self._valid_until:
            return None
        return self.fencing

    async def attempt(self) -> None:
        """One renewal round: roster row, then take or renew the lease."""
        started = time.monotonic()
        entry = ServerEntry(self.server_id, self.api_url, os.getpid(), socket.gethostname(), time.time())
        await asyncio.to_thread(heartbeat, self.registry, entry)
        fencing = await asyncio.to_thread(try_lead, self.registry, self.holder, self.ttl_s)
        if fencing is None:
            if self.fencing is not None:
                self._lose("another server holds the lease now")
            return
        if self.fencing is not None and fencing != self.fencing:
            if not self.single:
                self._lose(f"the lease changed hands (term {self.fencing} -> {fencing})")
                return
            # One server per SQLite data dir: a new term can only be ours, taken back after a
            # renewal came late (a starved CPU); stepping down would stop the only control plane.
            log.warning("leader lease renewed late: term %d -> %d, still leading", self.fencing, fencing)
            self.fencing = fencing
        # valid from when the round started: the lease's expiry was set after that
        self._valid_until = started + self.ttl_s * 0.8
        if self.fencing is None:
            self.fencing = fencing
            log.info("leading (term %d): reconciler, autoscaler, telemetry and gateways run here", fencing)
            self.became_leader.set()

    def _lose(self, why: str) -> None:
        log.error("lost the leadership: %s", why)
        self.fencing = None
        self.lost.set()

    async def run(self) -> None:
        while not self._halt.is_set():
            try:
                await self.attempt()
            except Exception as exc:  # the database is away: keep trying; fence() runs out alone
                log.warning("leader lease: cannot reach the registry (%s: %s)", type(exc).__name__, exc)
                if self.fencing is not None and time.monotonic() >= self._valid_until:
                    self._lose("the lease could not be renewed in time")
            if self.lost.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), self.renew_s)

    async def stop(self) -> None:
        """Leave the roster and, when leading, end the term so another server takes over now."""
        self._halt.set()
        fencing, self.fencing = self.fencing, None
        try:
            if fencing is not None:
                await asyncio.to_thread(release, self.registry, self.holder, fencing)
            await asyncio.to_thread(forget_server, self.registry, self.server_id)
        except Exception as exc:
            log.warning("leader lease: not released (%s); it expires in %.0f s", exc, self.ttl_s)
