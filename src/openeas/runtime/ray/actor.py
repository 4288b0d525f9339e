"""The Ray actor that runs one instance on the node where Ray placed it.

The actor is an asyncio actor (several calls at once: `wait_exit` stays pending for the
instance's whole life while `probe`, `read_log` and `stop` come and go). It runs on the node, so
everything machine-specific is decided there: the python that runs processors is the node's own
interpreter (this worker's `sys.executable`), `$PORT` is a port free on the node's address, and
the log file lives on the node (`<log_root>/<service>/<instance>.log`), read back through
`read_log`.

The instance is started through the keeper (openeas.runtime.keeper), which outlives this actor
by design: if the actor's worker dies for any reason, the keeper SIGKILLs the instance's process
group and every descendant, so no instance process outlives its actor.

Instances get `PORT`, `HOST` (the node's cluster address: listen there, the gateway connects to
it), `OPENEAS_SERVICE`, `OPENEAS_INSTANCE_ID`, the spec's env, and the node python's directory
first on `PATH`. Built-in processors get `--host $HOST`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from openeas.runtime.base import MARK, describe_exit
from openeas.runtime.local import (
    INSTANCE_ENV,
    SERVICE_ENV,
    _group_alive,
    _kill_group,
    _now,
    free_port,
    http_probe,
    instance_command,
    tail_lines,
    tcp_probe,
)
from openeas.spec import ServiceSpec

KEEPER_MODULE = "openeas.runtime.keeper"


def node_address() -> str:
    """The address Ray knows this node by (its `--node-ip-address`)."""
    import ray

    util: Any = ray.util  # untyped
    return str(util.get_node_ip_address())


class InstanceActor:
    """One instance: started by `start`, watched by `wait_exit`, ended by `stop`."""

    def __init__(self, instance_id: str, service: str, spec: ServiceSpec, log_root: str, port: int | None):
        self.instance_id = instance_id
        self.service = service
        self.spec = spec
        self.log_root = Path(log_root)
        self.requested_port = port
        self.host = ""
        self.port = 0
        self.leader = 0  # the instance's process group id (its leader's pid)
        self.keeper_pid = 0  # the detached keeper (self.keeper is the process that forked it)
        self.keeper: asyncio.subprocess.Process | None = None
        self._exited: asyncio.Future[int] | None = None  # made in start(), on the actor's loop
        self._watcher: asyncio.Future[None] | None = None
        self._info: dict[str, Any] = {}
        self.log_file = self.log_root / service / f"{instance_id}.log"

    def _command(self) -> str:
        command = instance_command(self.spec)
        if self.spec.processor:  # processors listen on 127.0.0.1 unless told otherwise
            command += ' --host "$HOST"'
        return command

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", os.defpath)
        for container in self.spec.containers:
            for var in container.env:
                env[var.name] = var.value
        env["PORT"] = str(self.port)
        env["HOST"] = self.host
        env[SERVICE_ENV] = self.service
        env[INSTANCE_ENV] = self.instance_id
        return env

    @property
    def exited(self) -> asyncio.Future[int]:
        if self._exited is None:
            raise RuntimeError(f"instance {self.instance_id} was never started")
        return self._exited

    async def start(self) -> dict[str, Any]:
        """Start the instance; returns where it listens and its pids."""
        self._exited = asyncio.get_running_loop().create_future()
        self.host = node_address()
        self.port = self.requested_port or free_port(self.host)
        command = self._command()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        work = self.log_root.parent / "work" / self.service
        work.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            note = f"{MARK} {_now()} starting {self.instance_id} on {self.host}:{self.port}: {command}\n"
            log.write(note.encode())
        self.keeper = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            KEEPER_MODULE,
            "--watch",
            str(os.getpid()),
            "--log",
            str(self.log_file),
            "--cwd",
            str(work),
            "--",
            "/bin/sh",
            "-c",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=self._env(),
            start_new_session=True,  # signals aimed at this worker's group must not reach it
        )
        assert self.keeper.stdout is not None
        first = (await self.keeper.stdout.readline()).decode().split()
        if len(first) != 3 or first[0] != "pid":
            code = await self.keeper.wait()
            raise RuntimeError(
                f"the keeper did not start the instance (exit {code}); is openeas installed on "
                f"node {self.host} for {sys.executable}?"
            )
        self.leader, self.keeper_pid = int(first[1]), int(first[2])
        self._watcher = asyncio.ensure_future(self._watch())  # held: a task needs a reference
        self._info = {
            "host": self.host,
            "port": self.port,
            "pid": self.leader,
            "keeper_pid": self.keeper_pid,
            "actor_pid": os.getpid(),
            "log_path": str(self.log_file),
            "service": self.service,
        }
        return self._info

    def info(self) -> dict[str, Any]:
        """What `start` returned: a restarted control plane re-attaches with it."""
        return self._info

    async def _watch(self) -> None:
        assert self.keeper is not None and self.keeper.stdout is not None
        code = -int(signal.SIGKILL)  # what it is if the keeper vanishes without a word
        line = (await self.keeper.stdout.readline()).decode().split()
        if len(line) >= 2 and line[0] == "exit":
            code = int(line[1])
        await self.keeper.wait()
        with contextlib.suppress(OSError), open(self.log_file, "ab") as log:
            log.write(f"{MARK} {_now()} {self.instance_id} exited: {describe_exit(code)}\n".encode())
        if not self.exited.done():
            self.exited.set_result(code)

    async def wait_exit(self) -> int:
        return await asyncio.shield(self.exited)

    def exit_code(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def probe(self, kind: str, path: str, timeout: float) -> tuple[bool, str]:
        if kind == "http":
            res = await http_probe(self.host, self.port, path, timeout)
        else:
            res = await tcp_probe(self.host, self.port, timeout)
        return res.ok, res.detail

    async def stop(self, grace_s: float) -> int:
        """SIGTERM to the instance's group, up to `grace_s` for all of it to go, SIGKILL."""
        if not self.exited.done():
            _kill_group(self.leader, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and (not self.exited.done() or _group_alive(self.leader)):
                await asyncio.sleep(0.05)
        _kill_group(self.leader, signal.SIGKILL)
        return await asyncio.shield(self.exited)

    def read_log(self, tail: int) -> list[str]:
        return tail_lines(self.log_file, tail)
