"""Queue servers: one supervised `python -m openeas.queue` process per running Async service.

The control plane runs this loop beside the reconciler. Every second it

- starts a queue server for each Async service whose desired state is running (also at zero
  instances: the queue must take puts for the autoscaler to wake the service), restarts one that
  exited (backoff 1 s doubling to 10 s) or whose spec changed (it reads its settings at start),
  and stops the ones of services stopped or deleted;
- reads each queue server's `/_queue/stats`, kept as `QueueLoad` for the autoscaler (backlog per
  instance, scale from and to zero) and the console.

A queue server registers its own addresses in the registry (`queue/registration.py`), which is
what the gateways route `<endpoint>` and `<endpoint>/sink` to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from openeas.config import REDIS_URL_ENV, STORE_URL_ENV
from openeas.queue import registration
from openeas.queue.backends import make_backend
from openeas.runtime.local import free_port
from openeas.spec.queue import ASYNC_TYPE
from openeas.store import Registry, ServiceRecord

log = logging.getLogger("openeas.control")

INTERVAL_S = 1.0
BACKOFF_MAX_S = 10.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class QueueLoad:
    backlog: int  # input requests waiting or in flight
    in_flight: int
    last_activity: float | None  # unix time of the last put or result (None: none yet)


@dataclass
class _Proc:
    settings: str  # the spec parts the queue server reads at start (it restarts when they change)
    proc: asyncio.subprocess.Process
    started: float
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class QueueServers:
    registry: Registry
    store_url: str
    log_dir: Path
    redis_url: str = ""
    python: str = sys.executable
    procs: dict[str, _Proc] = field(default_factory=dict)
    loads: dict[str, QueueLoad] = field(default_factory=dict)
    _backoff: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (failures, retry_at)
    ports: dict[str, int] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)  # Async services seen in the last pass
    reserved_ports: set[int] = field(default_factory=set)  # the server's own: its gateways bind them later

    def load(self, service: str) -> QueueLoad | None:
        return self.loads.get(service)

    async def run(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                while True:
                    try:
                        await self.tick(client)
                    except Exception as exc:  # keep supervising the others next time
                        log.warning("queue servers pass failed: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(INTERVAL_S)
        finally:
            await asyncio.gather(*(self._stop(n) for n in list(self.procs)), return_exceptions=True)

    async def tick(self, client: httpx.AsyncClient) -> None:
        services = await asyncio.to_thread(self.registry.list_services)
        wanted = {s.name: s for s in services if _is_async(s) and s.desired == "running"}
        names = {s.name for s in services}
        for name in self.known - names:  # deleted: its queues go too (a new one starts empty)
            await self._stop(name)
            await self._purge(name)
        self.known = {s.name for s in services if _is_async(s)}
        for name in list(self.procs):
            if name not in wanted or self.procs[name].settings != _settings_key(wanted[name]):
                await self._stop(name)
        for name, svc in wanted.items():
            p = self.procs.get(name)
            if p is not None and p.proc.returncode is not None:
                failures = 0 if time.time() - p.started > 60 else p.failures + 1
                if failures >= 2:  # maybe the port was taken meanwhile: take another
                    self.ports.pop(name, None)
                log.warning("queue server of %s exited (code %s); restarting", name, p.proc.returncode)
                del self.procs[name]
                self._backoff[name] = (failures, time.time() + min(BACKOFF_MAX_S, 2.0**failures))
            if name not in self.procs and time.time() >= self._backoff.get(name, (0, 0.0))[1]:
                await self._start(svc)
        servers = await asyncio.to_thread(registration.all_servers, self.registry.engine)
        for name in list(self.loads):
            if name not in wanted:
                del self.loads[name]
        for name in wanted:
            rec = servers.get(name)
            if rec is not None and rec.alive:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    stats: dict[str, Any] = (await client.get(rec.admin_url + "/_queue/stats")).json()
                    inp = stats["input"]
                    self.loads[name] = QueueLoad(inp["length"], inp["in_flight"], stats.get("last_activity"))

    async def _start(self, svc: ServiceRecord) -> None:
        # the same port across restarts: gateways keep a valid route while it comes back
        port = self.ports.get(svc.name)
        if port is None:
            port = self.ports[svc.name] = free_port(avoid=self.reserved_ports)
        args = [self.python, "-m", "openeas.queue", "--service", svc.name, "--port", str(port)]
        # both URLs can hold a password: the environment, not argv (ps shows argv to everyone)
        env = {k: v for k, v in os.environ.items() if k not in (STORE_URL_ENV, REDIS_URL_ENV)}
        env[STORE_URL_ENV] = self.store_url
        if self.redis_url:
            env[REDIS_URL_ENV] = self.redis_url
        out_dir = self.log_dir / svc.name
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "queue.log", "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=err, start_new_session=True, env=env
            )
        failures = self._backoff.get(svc.name, (0, 0.0))[0]
        self.procs[svc.name] = _Proc(_settings_key(svc), proc, time.time(), failures)
        log.info("queue server of %s started (pid %d)", svc.name, proc.pid)

    async def _purge(self, name: str) -> None:
        backend = make_backend(self.store_url, self.redis_url, name)
        try:
            await backend.purge()
            log.info("queues of deleted service %s removed", name)
        except Exception as exc:
            log.warning("cannot remove the queues of deleted service %s: %s", name, type(exc).__name__)
        finally:
            await backend.close()
        self.ports.pop(name, None)
        self._backoff.pop(name, None)

    async def _stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.proc.terminate()
        try:
            await asyncio.wait_for(p.proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.proc.kill()
            await p.proc.wait()


def _settings_key(svc: ServiceRecord) -> str:
    """What the queue server reads from the spec: not the instance count (scaling changes it)."""
    meta = svc.spec.get("metadata") or {}
    return json.dumps([svc.spec.get("queue"), meta.get("rpc")], sort_keys=True)


def _is_async(svc: ServiceRecord) -> bool:
    meta = svc.spec.get("metadata")
    return isinstance(meta, dict) and meta.get("type") == ASYNC_TYPE
