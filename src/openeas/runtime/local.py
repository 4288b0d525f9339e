"""The local runtime: every instance is a subprocess on this machine.

Each instance runs its command line through `/bin/sh -c` in its own session (so its whole process
tree can be signalled as one group), with the parent's environment plus the spec's `env`, plus
`PORT` (a free loopback port it must listen on), `OPENEAS_SERVICE`, `OPENEAS_INSTANCE_ID` and
`OPENEAS_REGISTRY_ID` (the registry's `identity`, when the server gave it one).
`metadata.memory` is enforced by watching the group's RSS (runtime/memory_limit.py).
stdout and stderr are appended to `<data_dir>/logs/<service>/<instance>.log`; the working
directory is `<data_dir>/work/<service>`. The directory of the server's Python comes first on
`PATH`, so `python3 ...` in a command runs the interpreter openeas is installed in.

Instances are not tied to the server's life: no PR_SET_PDEATHSIG, their own session, output to a
file rather than a pipe. A server that was killed leaves them running, and the next one adopts
them (`adopt`: same pid, recognised by the instance id in its environment); an adopted instance
is not our child, so its exit is seen through a pidfd and its exit status is unknown. A server
killed between starting an instance and writing its pid leaves a row without one: the next
leader finds that instance by its ids in /proc (`find`), not by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Collection
from pathlib import Path

from openeas.config import REDIS_URL_ENV, STORE_URL_ENV
from openeas.procfs import (
    all_pids,
    environ_has,
    environ_value,
    group_leader,
    stat_fields,
    stdout_path,
    wait_gone,
)
from openeas.runtime.base import DEFAULT_GRACE_S, MARK, InstanceHandle, ProbeResult, Runtime, describe_exit
from openeas.runtime.memory_limit import MemoryLimit, MemoryWatch
from openeas.spec import ServiceSpec
from openeas.spec.service import ProbeSpec

INSTANCE_ENV = "OPENEAS_INSTANCE_ID"
SERVICE_ENV = "OPENEAS_SERVICE"
REGISTRY_ENV = "OPENEAS_REGISTRY_ID"
UNKNOWN_EXIT = 0x7FFF  # what `wait` returns for an adopted instance: not our child, no status


class LocalHandle(InstanceHandle):
    """A local instance: its process group is led by `pid`. `process` is None for an instance
    adopted from a previous control plane (not our child: watched through a pidfd, and its exit
    status cannot be known)."""

    def __init__(
        self,
        instance_id: str,
        service: str,
        host: str,
        port: int,
        pid: int,
        log_path: Path,
        started_at: float,
        process: asyncio.subprocess.Process | None = None,
    ):
        super().__init__(instance_id, service, host, port, pid, started_at)
        self.process = process
        self.group = pid  # started in a session of its own: the leader's pid is the group id
        self.log_file = log_path
        self.exited: asyncio.Task[int] | None = None
        self.stopping = False  # stop() was called: it, not the exit watcher, cleans the group up
        self.memory: MemoryLimit | None = None  # metadata.memory enforced (runtime/memory_limit.py)

    @property
    def adopted(self) -> bool:
        return self.process is None


def instance_command(spec: ServiceSpec) -> str:
    """The shell command line that starts an instance of `spec`."""
    if spec.processor:
        from openeas.processors import processor_command

        return processor_command(
            spec.processor, spec.model_path or "", spec.metadata.rpc.model_dump(), spec.model_config_
        )
    return spec.containers[0].entry


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A port free now on `host`, not one of `avoid`: ports this server picked for processes that
    bind them later (its gateways), which the kernel would hand out again until they do."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError(f"no free port on {host} outside {sorted(avoid)[:10]}")


class LocalRuntime(Runtime):
    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", python: str = sys.executable, registry_id: str = ""
    ):
        self.data_dir = data_dir
        # Registry.identity(): marks our instances, so that `find` never picks another registry's
        self.registry_id = registry_id
        self.reserved_ports: set[int] = set()  # the server's own (free_port's `avoid`)
        self.host = host
        self.python = python
        self._recent_ports: deque[int] = deque(maxlen=256)  # not handed out twice in a row
        self._memory = MemoryWatch()  # metadata.memory of every instance, one /proc scan at a time
        # adopted instances whose log is not under our data dir (started by another server)
        self._adopted_logs: dict[tuple[str, str], Path] = {}

    # -- paths -----------------------------------------------------------------------------
    def log_path(self, service: str, instance_id: str) -> Path:
        return self.data_dir / "logs" / service / f"{instance_id}.log"

    def work_dir(self, service: str) -> Path:
        return self.data_dir / "work" / service

    # -- start -----------------------------------------------------------------------------
    def _port(self) -> int:
        try:
            port = free_port(self.host, self.reserved_ports.union(self._recent_ports))
        except OSError:  # every pick was a recent port: any but the server's own
            return free_port(self.host, self.reserved_ports)
        self._recent_ports.append(port)
        return port

    def _env(self, spec: ServiceSpec, service: str, instance_id: str, port: int) -> dict[str, str]:
        # not the registry's or Redis' URL: they can hold passwords, and instances run user code
        env = {k: v for k, v in os.environ.items() if k not in (STORE_URL_ENV, REDIS_URL_ENV)}
        env.setdefault("PYTHONUNBUFFERED", "1")  # so print() reaches the log as it happens
        bindir = str(Path(self.python).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)
        for container in spec.containers:
            for var in container.env:
                env[var.name] = var.value
        env["PORT"] = str(port)
        env[SERVICE_ENV] = service
        env[INSTANCE_ENV] = instance_id
        if self.registry_id:
            env[REGISTRY_ENV] = self.registry_id
        return env

    async def start(
        self, instance_id: str, service: str, spec: ServiceSpec, port: int | None = None
    ) -> LocalHandle:
        port = port or self._port()
        command = instance_command(spec)
        log_path = self.log_path(service, instance_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd = self.work_dir(service)
        cwd.mkdir(parents=True, exist_ok=True)
        env = self._env(spec, service, instance_id, port)
        # unbuffered, and a failed write ignored: a full log disk must not keep instances from
        # starting (nor leave bytes in a buffer whose flush would fail again at close)
        with open(log_path, "ab", buffering=0) as log:
            with contextlib.suppress(OSError):
                log.write(f"{MARK} {_now()} starting {instance_id} on port {port}: {command}\n".encode())
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        handle = LocalHandle(
            instance_id, service, self.host, port, process.pid, log_path, time.time(), process
        )
        if spec.metadata.memory:
            handle.memory = self._memory.watch(process.pid, spec.metadata.memory, log_path)
        handle.exited = asyncio.ensure_future(self._watch(handle))
        return handle

    async def adopt(
        self,
        instance_id: str,
        service: str,
        *,
        pid: int | None = None,
        host: str = "",
        port: int = 0,
        spec: ServiceSpec | None = None,
    ) -> LocalHandle | None:
        if not pid:  # started, but killed before its pid was written: look for it
            found = self.find(instance_id, service)
            if found is None:
                return None
            pid, port = found
        # The same instance: alive (not a zombie), still leading the group it was started in, and
        # carrying our instance id in its environment (a reused pid carries another).
        if not port or not group_leader(pid) or not _is_instance(pid, instance_id):
            return None
        if not environ_has(pid, SERVICE_ENV, service):
            return None
        # Its log is where the previous control plane put it (another data dir when a second
        # server took over): its stdout says where.
        log_file = stdout_path(pid) or self.log_path(service, instance_id)
        handle = LocalHandle(instance_id, service, host or self.host, port, pid, log_file, time.time())
        if spec is not None and spec.metadata.memory:
            handle.memory = self._memory.watch(pid, spec.metadata.memory, log_file)
        self._adopted_logs[(service, instance_id)] = log_file
        with contextlib.suppress(OSError), open(log_file, "ab") as log:
            log.write(f"{MARK} {_now()} {instance_id} (pid {pid}) adopted by a new control plane\n".encode())
        handle.exited = asyncio.ensure_future(self._watch(handle))
        return handle

    async def _watch(self, handle: LocalHandle) -> int:
        if handle.process is not None:
            code = await handle.process.wait()
        else:
            await wait_gone(handle.group)
            code = UNKNOWN_EXIT
        if handle.memory is not None:
            handle.memory.cancel()
        # The instance is its process group: when the leader dies on its own, nothing of it may
        # linger (a background child would hold the port and the next start would fail).
        if not handle.stopping:
            _kill_group(handle.group, signal.SIGKILL)
        how = self.describe_exit(handle, code)
        with contextlib.suppress(OSError), open(handle.log_file, "ab") as log:
            log.write(f"{MARK} {_now()} {handle.instance_id} exited: {how}\n".encode())
        return code

    def describe_exit(self, handle: InstanceHandle, code: int) -> str:
        memory = handle.memory if isinstance(handle, LocalHandle) else None
        if memory is not None and memory.exceeded is not None:
            return f"{memory.exceeded.describe()}: {describe_exit(code)}"
        if isinstance(handle, LocalHandle) and handle.adopted and code == UNKNOWN_EXIT:
            return "exited (status unknown: it was adopted from a previous control plane, not our child)"
        return describe_exit(code)

    # -- watch -----------------------------------------------------------------------------
    @staticmethod
    def _local(handle: InstanceHandle) -> LocalHandle:
        if not isinstance(handle, LocalHandle) or handle.exited is None:
            raise TypeError(f"{handle!r} was not started by the local runtime")
        return handle

    async def wait(self, handle: InstanceHandle) -> int:
        local = self._local(handle)
        assert local.exited is not None
        return await asyncio.shield(local.exited)

    def exit_code(self, handle: InstanceHandle) -> int | None:
        local = self._local(handle)
        assert local.exited is not None
        return local.exited.result() if local.exited.done() else None

    async def probe(self, handle: InstanceHandle, probe: ProbeSpec | None) -> ProbeResult:
        timeout = probe.timeout_seconds if probe else 1.0
        # A probe port in the spec is the container port EAS would use; locally the instance
        # listens on its own $PORT, so that is where every probe goes.
        if probe is not None and probe.http_get is not None:
            return await http_probe(handle.host, handle.port, probe.http_get.path, timeout)
        return await tcp_probe(handle.host, handle.port, timeout)

    # -- stop ------------------------------------------------------------------------------
    async def stop(self, handle: InstanceHandle, grace_s: float = DEFAULT_GRACE_S) -> int:
        local = self._local(handle)
        assert local.exited is not None
        pgid = local.group
        if local.exited.done():
            _kill_group(pgid, signal.SIGKILL)
            return local.exited.result()
        local.stopping = True
        _kill_group(pgid, signal.SIGTERM)
        # The whole group gets the grace period: a shell wrapper dies of SIGTERM at once while
        # the server it started is still finishing its requests.
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (not local.exited.done() or _group_alive(pgid)):
            await asyncio.sleep(0.05)
        _kill_group(pgid, signal.SIGKILL)
        return await asyncio.shield(local.exited)

    def find(self, instance_id: str, service: str) -> tuple[int, int] | None:
        """(pid, port) of the running instance `instance_id` of `service` that a server of this
        registry started on this machine (any data dir), or None. Only with a registry id: ids
        alone could name another registry's instance."""
        if not self.registry_id:
            return None
        for pid in all_pids():
            if (
                environ_has(pid, INSTANCE_ENV, instance_id)
                and environ_has(pid, REGISTRY_ENV, self.registry_id)
                and environ_has(pid, SERVICE_ENV, service)
                and group_leader(pid)
            ):
                port = environ_value(pid, "PORT") or ""
                return (pid, int(port)) if port.isdigit() else None
        return None

    async def cleanup_stale(self, instance_id: str, pid: int | None, service: str = "") -> bool:
        if not pid and service:
            found = self.find(instance_id, service)
            pid = found[0] if found else None
        if not pid or not _is_instance(pid, instance_id):
            return False
        _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and _group_alive(pid):
            await asyncio.sleep(0.05)
        _kill_group(pid, signal.SIGKILL)
        return True

    # -- logs ------------------------------------------------------------------------------
    def read_log(self, service: str, instance_id: str, tail: int) -> list[str]:
        path = self._adopted_logs.get((service, instance_id)) or self.log_path(service, instance_id)
        return tail_lines(path, tail)

    def log_instances(self, service: str) -> list[str]:
        folder = self.data_dir / "logs" / service
        if not folder.is_dir():
            return []
        files = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [p.stem for p in files]


# -- helpers ---------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in group `pgid`.

    Zombies count as gone: where PID 1 does not reap orphans (some containers), a dead child of
    the instance's shell would otherwise look alive for ever.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _is_instance(pid: int, instance_id: str) -> bool:
    """True when process `pid` carries our instance id in its environment (pids get reused)."""
    return environ_has(pid, INSTANCE_ENV, instance_id)


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file, read from the end (logs can be large)."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            block = 8192
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= count:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]


async def tcp_probe(host: str, port: int, timeout: float) -> ProbeResult:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, f"TCP connect to port {port}: {_why(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, f"TCP connect to port {port}: ok")


async def http_probe(host: str, port: int, path: str, timeout: float) -> ProbeResult:
    if not path.startswith("/"):
        path = "/" + path
    what = f"GET {path} on port {port}"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: openeas-probe\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, f"{what}: {_why(exc)}")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return ProbeResult(False, f"{what}: not an HTTP response ({status_line[:60]!r})")
    status = int(parts[1])
    return ProbeResult(200 <= status < 400, f"{what} -> {status}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there yet)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
