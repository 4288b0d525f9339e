"""An in-memory `Runtime` for unit tests of the reconciler and the service layer: no processes.

Instances are futures: `start` makes one, `crash(id)` ends it with an exit code (as a process
dying on its own), `stop` ends it with -15. Probes pass once an instance has been probed
`probes_before_ready` times (0: at once), unless its id is in `unhealthy`. Every start, probe
and stop is recorded, so a test can say what the reconciler asked for and when.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path

from openeas.runtime.base import DEFAULT_GRACE_S, MARK, InstanceHandle, ProbeResult, Runtime
from openeas.spec import ServiceSpec
from openeas.spec.service import ProbeSpec


class FakeHandle(InstanceHandle):
    def __init__(self, instance_id: str, service: str, port: int, spec: ServiceSpec) -> None:
        super().__init__(instance_id, service, "127.0.0.1", port, None, time.time())
        self.spec = spec
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.probes = 0


class FakeRuntime(Runtime):
    def __init__(self, probes_before_ready: int = 0) -> None:
        self.probes_before_ready = probes_before_ready
        self.unhealthy: set[str] = set()  # instance ids whose probes fail
        self.fail_start: set[str] = set()  # services whose instances cannot start
        self.starts: list[str] = []  # instance ids, in start order (a restart appears again)
        self.stops: list[str] = []  # instance ids stop() was called for, in order
        self.adoptions: list[str] = []  # instance ids adopt() re-attached to, in order
        self.handles: dict[str, FakeHandle] = {}  # the latest handle of each instance id
        self.logs: dict[tuple[str, str], list[str]] = {}
        self._ports = itertools.count(20000)

    # -- test helpers ------------------------------------------------------------------------
    def live(self, service: str | None = None) -> list[FakeHandle]:
        return [h for h in self.handles.values() if not h.exited.done() and service in (None, h.service)]

    def crash(self, instance_id: str, code: int = 1, output: str = "") -> None:
        """The instance exits on its own (a crash), after writing `output` to its log."""
        handle = self.handles[instance_id]
        if output:
            self.logs.setdefault((handle.service, instance_id), []).append(output)
        if not handle.exited.done():
            handle.exited.set_result(code)

    # -- Runtime ---------------------------------------------------------------------------
    async def start(
        self, instance_id: str, service: str, spec: ServiceSpec, port: int | None = None
    ) -> InstanceHandle:
        if service in self.fail_start:
            raise RuntimeError("no room for the instance")
        handle = FakeHandle(instance_id, service, port or next(self._ports), spec)
        self.handles[instance_id] = handle
        self.starts.append(instance_id)
        self.logs.setdefault((service, instance_id), []).append(f"{MARK} starting {instance_id}")
        return handle

    @staticmethod
    def _fake(handle: InstanceHandle) -> FakeHandle:
        assert isinstance(handle, FakeHandle), handle
        return handle

    async def wait(self, handle: InstanceHandle) -> int:
        return await asyncio.shield(self._fake(handle).exited)

    def exit_code(self, handle: InstanceHandle) -> int | None:
        exited = self._fake(handle).exited
        return exited.result() if exited.done() else None

    async def probe(self, handle: InstanceHandle, probe: ProbeSpec | None) -> ProbeResult:
        fake = self._fake(handle)
        fake.probes += 1
        ok = fake.probes > self.probes_before_ready and fake.instance_id not in self.unhealthy
        return ProbeResult(ok, f"fake probe {fake.probes}: {'ok' if ok else 'not ready'}")

    async def stop(self, handle: InstanceHandle, grace_s: float = DEFAULT_GRACE_S) -> int:
        fake = self._fake(handle)
        self.stops.append(fake.instance_id)
        if not fake.exited.done():
            fake.exited.set_result(-int(signal.SIGTERM))
        return fake.exited.result()

    def log_path(self, service: str, instance_id: str) -> Path:
        return Path("/nonexistent/fake-runtime") / service / f"{instance_id}.log"

    def read_log(self, service: str, instance_id: str, tail: int) -> list[str]:
        return self.logs.get((service, instance_id), [])[-tail:]

    def log_instances(self, service: str) -> list[str]:
        return [i for (s, i) in reversed(list(self.logs)) if s == service]

    async def adopt(
        self,
        instance_id: str,
        service: str,
        *,
        pid: int | None = None,
        host: str = "",
        port: int = 0,
        spec: ServiceSpec | None = None,
    ) -> InstanceHandle | None:
        """A live instance of `service` this fake started (a second reconciler on the same fake
        stands for a restarted control plane)."""
        handle = self.handles.get(instance_id)
        if handle is None or handle.exited.done() or handle.service != service:
            return None
        self.adoptions.append(instance_id)
        return handle

    async def cleanup_stale(self, instance_id: str, pid: int | None, service: str = "") -> bool:
        handle = self.handles.get(instance_id)
        if handle is None or handle.exited.done():
            return False
        await self.stop(handle, 0)
        return True
