"""The runtime interface: start, watch, probe and stop one instance of a service.

The reconciler (control/reconciler.py) talks only to this interface, so a distributed backend
(Ray actors, one per instance) can stand in for the local one without the control plane changing.
A runtime owns no policy: restarts, backoff and rolling updates are the reconciler's business.
`openeas server` (control/server.py) picks the runtime and passes it in; the reconciler and the
API use only what is declared here (tests/control/fake_runtime.py is an in-memory one).
"""

from __future__ import annotations

import abc
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path

from openeas.spec import ServiceSpec
from openeas.spec.service import ProbeSpec

DEFAULT_GRACE_S = 10.0
MARK = "[openeas]"  # prefix of the lines a runtime itself writes into an instance log


def describe_exit(code: int) -> str:
    """An exit status in words (negative: killed by that signal, as asyncio reports it)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    if 128 < code < 128 + 65:  # a shell reporting that its command died of a signal
        with contextlib.suppress(ValueError):
            return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
    return f"exit code {code}"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # what was checked and what happened, for messages ("GET /health -> 200")


class NotPlaceable(RuntimeError):
    """`Runtime.start` cannot place the instance on any node the runtime knows.

    `str(exc)` names what is missing ("needs gpu: 1; no node has it"): the reconciler shows it as
    the service's Waiting message and tries again later (a node that has it may join)."""


class InstanceHandle:
    """One started instance. Runtimes subclass it to keep their own process/actor reference."""

    def __init__(
        self, instance_id: str, service: str, host: str, port: int, pid: int | None, started_at: float
    ):
        self.instance_id = instance_id
        self.service = service
        self.host = host  # where the gateway reaches the instance
        self.port = port  # the instance's $PORT
        self.pid = pid
        self.started_at = started_at

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.instance_id} {self.host}:{self.port} pid={self.pid}>"


class Runtime(abc.ABC):
    """Starts instances somewhere and tells the reconciler how they are doing."""

    @abc.abstractmethod
    async def start(
        self, instance_id: str, service: str, spec: ServiceSpec, port: int | None = None
    ) -> InstanceHandle:
        """Start one instance running `spec`; `port` None lets the runtime pick a free one."""

    @abc.abstractmethod
    async def wait(self, handle: InstanceHandle) -> int:
        """Return the exit status once the instance has exited (negative: killed by that signal)."""

    @abc.abstractmethod
    def exit_code(self, handle: InstanceHandle) -> int | None:
        """The exit status if the instance has exited, else None (does not block)."""

    @abc.abstractmethod
    async def probe(self, handle: InstanceHandle, probe: ProbeSpec | None) -> ProbeResult:
        """One readiness/liveness check: `probe.http_get` (200-399 passes), `probe.tcp_socket`,
        or with no probe a TCP connect to the instance's port."""

    @abc.abstractmethod
    async def stop(self, handle: InstanceHandle, grace_s: float = DEFAULT_GRACE_S) -> int:
        """Ask the instance to stop (SIGTERM), wait up to `grace_s`, then kill it. Returns its exit
        status."""

    @abc.abstractmethod
    def log_path(self, service: str, instance_id: str) -> Path:
        """Where the instance's stdout and stderr go."""

    @abc.abstractmethod
    def read_log(self, service: str, instance_id: str, tail: int) -> list[str]:
        """The last `tail` lines of the instance's log (empty when it has none)."""

    @abc.abstractmethod
    def log_instances(self, service: str) -> list[str]:
        """Instance ids that have a log for `service`, newest first (kept after instances go)."""

    def describe_exit(self, handle: InstanceHandle, code: int) -> str:
        """How the instance ended, for its log and the service message ("exit code 1"). Runtimes
        override it where an exit can have a cause beyond the code (a lost node)."""
        return describe_exit(code)

    @abc.abstractmethod
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
        """Re-attach to instance `instance_id` of `service` that a previous control plane started
        and that still runs (its row in the store gives `pid`, `host` and `port`), so it is
        supervised as if this process had started it: same process, no restart. None when it is
        gone or is not that instance any more (a reused pid); the caller then replaces it. `spec`,
        when given, is what it runs (a runtime re-applies the limits it enforces itself)."""

    @abc.abstractmethod
    async def cleanup_stale(self, instance_id: str, pid: int | None, service: str = "") -> bool:
        """Kill an instance left behind by a previous control process, if it is still alive and
        really is that instance (of `service`; found without `pid` where the runtime can: a
        row written before its instance's pid). Returns True when something was killed."""

    def output_lines(self, service: str, instance_id: str, count: int) -> list[str]:
        """The last `count` lines the instance itself wrote (the runtime's MARK lines left out),
        for status messages."""
        lines = [
            line for line in self.read_log(service, instance_id, count * 10) if not line.startswith(MARK)
        ]
        return lines[-count:]
