"""Gateway processes: one supervised process group per gateway (the shared one and dedicated ones).

Each gateway runs as `python -m openeas.gateway --name NAME [--workers N]` (the store URL in
$OPENEAS_STORE_URL and the Redis URL in $OPENEAS_REDIS_URL, not on the command line) in its
own session (process group), so load on, or a crash of, one gateway does not touch another: each
has its own listeners, limits and counters. Its stdout and stderr go to `<log_dir>/<name>.log` (a
file, not a pipe: the gateway outlives a server that is killed). The supervisor

- adopts, on its first round, a gateway of the same name and registry that a previous server
  left running on this machine with the same configuration (`OPENEAS_GATEWAY_CONFIG`, a
  fingerprint of its command line and of the record's restart fields), and stops one with
  another configuration (docs/distributed.md, "Adoption");
- follows the output file for the gateway's ready line (`openeas-gateway NAME ready
  internet=h:p ...`), which gives the real bound addresses (port 0 in the record works), and
  forwards the rest to the server log, keeping the last lines for status messages;
- restarts the gateway when it exits, with backoff (1 s doubling to 10 s, back to 1 s after 60 s
  of running); when it exits before it is ready with exit code 2 (a port taken, a certificate that
  cannot be loaded, an invalid record) or 3 times in a row, the status is Failed with the reason,
  and it keeps being retried (the port may become free);
- kills what is left of the process group when the leader exits (the workers of a `--workers N`
  gateway whose parent was SIGKILLed would otherwise keep its ports).

Statuses are EAS's: Creating (started, not ready yet; also while restarting after an exit),
Running, Failed, Deleting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openeas.control.errors import log_failure
from openeas.gateway import REDIS_URL_ENV, STORE_URL_ENV
from openeas.procfs import (
    all_pids,
    cmdline,
    environ_has,
    environ_value,
    group_leader,
    running,
    stdout_path,
    wait_gone,
)
from openeas.runtime.base import MARK
from openeas.store import NotFound, Registry

log = logging.getLogger("openeas.control")

EXIT_CONFIG = 2  # the gateway's exit code for a port it cannot bind, a bad record or certificate
# set by the supervisor on the gateways it starts: the configuration they run (config_fingerprint)
CONFIG_ENV = "OPENEAS_GATEWAY_CONFIG"
# Record fields that only a restart of the gateway's processes applies (the rest it reads live).
RESTART_FIELDS = (
    "listen",
    "enable_internet",
    "enable_intranet",
    "tls",
    "ssl_redirect",
    "workers",
    "replicas",
)


@dataclass(frozen=True)
class SupervisorSettings:
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 10.0
    backoff_reset_s: float = 60.0  # running this long: the next restart waits backoff_initial_s
    failed_after: int = 3  # exits in a row before ready -> Failed (exit code 2: at once)
    grace_s: float = 5.0  # SIGTERM -> SIGKILL when stopping
    # `--redis-url` for every gateway: limits shared in Redis (docs/gateway.md); set from
    # `openeas server --redis-url`
    redis_url: str | None = None


def exit_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown (adopted from a previous server, not our child)"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def parse_ready_line(text: str) -> dict[str, str]:
    """`openeas-gateway NAME ready internet=h:p intranet=h:p metrics=h:p,h:p`
    -> {"internet": "h:p", "intranet": "h:p", "metrics": "h:p,h:p"} (see `metrics_list`)"""
    _, _, rest = text.partition(" ready")
    out = {}
    for part in rest.split():
        kind, sep, address = part.partition("=")
        if sep:
            out[kind] = address
    return out


def metrics_list(value: str) -> list[str]:
    """`h:p,h:p` (one metrics listener per worker process) -> ["h:p", "h:p"]"""
    return [part for part in value.split(",") if part]


def process_group(pid: int) -> list[int]:
    """The leader and its children (the workers of a `--workers N` gateway); Linux /proc."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(c) for c in children if c.isdigit())]


class GatewaySupervisor:
    """Runs one gateway process group and restarts it when it dies. `run()` is its task.

    On its first round it looks for a gateway of the same name and registry that a previous
    server left running on this machine (`find_gateway`): one started with the same
    configuration (`config_fingerprint`) is adopted, not restarted; another is stopped first."""

    def __init__(
        self,
        name: str,
        store_url: str,
        log_dir: Path,
        *,
        workers: int = 1,
        python: str = sys.executable,
        on_change: Callable[[], None] = lambda: None,
        settings: SupervisorSettings | None = None,
        registry: Registry | None = None,
    ):
        self.name = name
        self.store_url = store_url
        self.log_dir = log_dir
        self.workers = workers
        self.python = python
        self.on_change = on_change
        self.settings = settings or SupervisorSettings()
        self.registry = registry  # to read the record's restart fields for the fingerprint
        self.status = "Creating"
        self.message = ""
        self.bound: dict[str, str] = {}  # kind -> host:port, from the ready line
        self.metrics: list[str] = []  # host:port of each process's metrics listener
        self.ready = asyncio.Event()
        self.ready_line = ""
        self.proc: asyncio.subprocess.Process | None = None  # our child (None when adopted)
        self.adopted_pid: int | None = None  # a gateway a previous server started, now ours
        self.adoptions = 0
        self.starts = 0
        self._stopping = asyncio.Event()
        self._kick = asyncio.Event()  # cut a backoff short (restart)
        self._restart = False
        self._stderr_tail: deque[str] = deque(maxlen=5)

    # -- state -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid if self.proc.returncode is None else None
        if self.adopted_pid is not None and running(self.adopted_pid):
            return self.adopted_pid
        return None

    def metrics_addresses(self) -> list[str]:
        """`host:port` of the metrics listener (GET /metrics, GET /stats) of every gateway
        process (one per worker); empty until the gateway is ready."""
        return list(self.metrics) if self.ready.is_set() else []

    def pids(self) -> list[int]:
        pid = self.pid
        return process_group(pid) if pid else []

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def output_path(self) -> Path:
        """The gateway process's stdout and stderr (a file, so it outlives this server)."""
        return self.log_dir / f"{self.name}.log"

    def _set(self, status: str, message: str) -> None:
        if self._stopping.is_set() and status != "Deleting":
            return
        if (status, message) != (self.status, self.message):
            self.status, self.message = status, message
            self.on_change()

    def command(self) -> list[str]:
        cmd = [
            self.python,
            "-m",
            "openeas.gateway",
            "--name",
            self.name,
            "--access-log",
            str(self.log_dir / f"{self.name}-access.log"),
            "--grace",
            str(self.settings.grace_s),
        ]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        return cmd  # the store and Redis URLs travel in the environment: `environment()`

    def environment(self) -> dict[str, str]:
        """The gateway's environment: ours plus the store URL and the Redis URL (both can hold a
        password; argv is readable by every local user in ps, the environment only by us)."""
        env = {k: v for k, v in os.environ.items() if k not in (STORE_URL_ENV, REDIS_URL_ENV)}
        env[STORE_URL_ENV] = self.store_url
        if self.settings.redis_url:  # [limits hook]
            env[REDIS_URL_ENV] = self.settings.redis_url
        return env

    async def fingerprint(self) -> str:
        """What a running gateway must have been started with to be adopted: its command line
        (the access log's path aside: it names the data dir of the server that started it) and
        the fields of its record that only a restart applies."""
        cmd = self.command()
        cmd = [part for i, part in enumerate(cmd) if part != "--access-log" and cmd[i - 1] != "--access-log"]
        record: dict[str, Any] = {}
        if self.registry is not None:
            with contextlib.suppress(NotFound):
                spec = (await asyncio.to_thread(self.registry.get_gateway, self.name)).spec
                record = {key: spec.get(key) for key in RESTART_FIELDS}
        # the Redis URL is no argument but a gateway started without (or with another) is not ours
        return config_fingerprint([*cmd, "redis", self.settings.redis_url or ""], record)

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        backoff = s.backoff_initial_s
        failures = 0  # exits in a row before it was ready
        self.log_dir.mkdir(parents=True, exist_ok=True)
        first = True
        while not self._stopping.is_set():
            started = time.monotonic()
            self._restart = False
            self._stderr_tail.clear()
            code: int | None = None
            fingerprint = await self.fingerprint()
            left = await asyncio.to_thread(find_gateway, self.name, self.store_url) if first else None
            first = False
            if left is not None and environ_value(left, CONFIG_ENV) == fingerprint:
                self.adoptions += 1
                code = await self._follow_adopted(left)
                spawned = True
            else:
                if left is not None:
                    log.info("gateway %s: stopping pid %d, left with another config", self.name, left)
                    await stop_group(left, s.grace_s)
                self.starts += 1
                spawned, code = await self._spawn_and_follow(fingerprint)
            was_ready = self.ready.is_set()
            self.ready.clear()
            self.bound = {}
            self.metrics = []
            self.proc = None
            self.adopted_pid = None
            self.on_change()
            if self._stopping.is_set():
                break
            if self._restart:  # asked for (new listeners, TLS or workers): at once, fresh counters
                failures, backoff = 0, s.backoff_initial_s
                continue
            if time.monotonic() - started > s.backoff_reset_s:
                backoff = s.backoff_initial_s
            failures = 0 if was_ready else failures + 1
            reason = self._reason(code if spawned else None)
            if was_ready:
                log.error("gateway %s exited (%s)", self.name, exit_text(code))
            else:
                log.error(
                    "gateway %s exited (%s) before it was ready: %s", self.name, exit_text(code), reason
                )
            failed = not was_ready and (code == EXIT_CONFIG or failures >= s.failed_after)
            self._set(
                "Failed" if failed else "Creating",
                f"the gateway process exited ({reason}); restarting in {backoff:g} s",
            )
            log.info("restarting gateway %s in %g s", self.name, backoff)
            self._kick.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self._kick)]
            await asyncio.wait(waiters, timeout=backoff, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            backoff = min(backoff * 2, s.backoff_max_s)

    async def _spawn_and_follow(self, fingerprint: str) -> tuple[bool, int | None]:
        """Start the gateway process and follow it until it exits: (started, exit code)."""
        path = self.output_path
        try:
            with open(path, "ab") as out:
                out.write(f"{MARK} {_now()} starting gateway {self.name}\n".encode())
                out.flush()
                offset = out.tell()
                self.proc = await asyncio.create_subprocess_exec(
                    *self.command(),
                    env={**self.environment(), CONFIG_ENV: fingerprint},
                    stdin=asyncio.subprocess.DEVNULL,
                    # a file, not a pipe: the gateway outlives this server (and is adopted)
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            log.error("cannot start gateway %s: %s", self.name, exc)
            self._stderr_tail.append(f"cannot start the gateway process: {exc}")
            return False, None
        self.on_change()
        proc = self.proc
        code = await self._follow(proc.pid, proc.wait(), path, offset)
        return True, code

    async def _follow_adopted(self, pid: int) -> int | None:
        """Supervise gateway `pid` that a previous server started, as if we had (its exit
        status cannot be known: it is not our child)."""
        self.adopted_pid = pid
        path = stdout_path(pid) or self.output_path
        offset = _last_start(path)
        replayed = 0  # what it wrote before: read for its ready line only
        with contextlib.suppress(OSError):
            replayed = path.stat().st_size
        log.info("gateway %s: adopted pid %d left running by a previous server", self.name, pid)
        self.on_change()

        async def gone() -> int | None:
            await wait_gone(pid)
            return None

        return await self._follow(pid, gone(), path, offset, replayed)

    def _reason(self, code: int | None) -> str:
        said = [line for line in self._stderr_tail if line.startswith("openeas-gateway:")]
        detail = (said or list(self._stderr_tail) or [""])[-1].removeprefix("openeas-gateway:").strip()
        return f"{exit_text(code)}: {detail}" if detail else exit_text(code)

    async def _follow(
        self, pid: int, exited: Coroutine[Any, Any, int | None], path: Path, offset: int, replayed: int = 0
    ) -> int | None:
        self.ready_line = ""
        ended = asyncio.Event()
        reader = asyncio.ensure_future(self._read_output(pid, path, offset, ended, replayed))
        try:
            code = await exited
        finally:
            ended.set()
        # Workers of a `--workers N` gateway outlive a parent that was killed: end the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(reader, 1.0)
        return code

    async def _read_output(
        self, pid: int, path: Path, offset: int, ended: asyncio.Event, replayed: int = 0
    ) -> None:
        """Follow the gateway's output file from `offset`: its ready line, then its messages
        (into the server log, the last ones kept for status messages); a last read once the
        process `ended`. Lines before `replayed` (an adopted gateway's past) are searched for the
        ready line only."""
        pending = b""
        while True:
            done = ended.is_set()
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                chunk = b""
            start = offset - len(pending)
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                start += len(line) + 1
                self._output_line(pid, line.decode(errors="replace").rstrip(), quiet=start <= replayed)
            if done:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), 0.05 if not self.ready.is_set() else 0.5)

    def _output_line(self, pid: int, text: str, quiet: bool = False) -> None:
        if not text:
            return
        if not self.ready.is_set() and f"openeas-gateway {self.name} ready" in text:
            self.ready_line = text
            bound = parse_ready_line(text)
            self.metrics = metrics_list(bound.pop("metrics", ""))
            self.bound = bound  # the data-plane listeners only
            self.ready.set()
            log.info("gateway %s ready (pid %d): %s", self.name, pid, text)
            self._set("Running", "")
            return
        if quiet:
            return
        self._stderr_tail.append(text)
        log.info("gateway %s: %s", self.name, text)

    # -- control ---------------------------------------------------------------------------
    def _terminate(self) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    def restart(self, workers: int, why: str) -> None:
        """Stop the running process (SIGTERM, requests in flight finish) and start a new one."""
        self.workers = workers
        self._restart = True
        self._set("Creating", f"restarting: {why}")
        self._terminate()
        self._kick.set()

    async def stop(self, status: str | None = None) -> None:
        if status is not None:
            self.status, self.message = status, ""
            self.on_change()
        self._stopping.set()
        pid = self.pid
        if pid is None:
            return
        if self.proc is not None:
            proc = self.proc
            self._terminate()
            try:
                await asyncio.wait_for(proc.wait(), self.settings.grace_s + 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:
            await stop_group(pid, self.settings.grace_s + 5)


def config_fingerprint(command: list[str], record: dict[str, Any]) -> str:
    data = json.dumps({"command": command, "record": record}, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def find_gateway(name: str, store_url: str) -> int | None:
    """The pid of a gateway process `name` on this machine that a server supervisor started
    for the registry `store_url` (leader of its own group), or None."""
    for pid in all_pids():
        argv = cmdline(pid)
        if "openeas.gateway" not in argv or "--name" not in argv:
            continue
        i = argv.index("--name")
        if argv[i + 1 : i + 2] != [name] or not group_leader(pid):
            continue
        if environ_value(pid, CONFIG_ENV) is not None and environ_has(pid, STORE_URL_ENV, store_url):
            return pid
    return None


def supervised_gateways(store_url: str) -> dict[int, str]:
    """Every gateway process a server supervisor started for `store_url` on this machine:
    pid -> gateway name."""
    found = {}
    for pid in all_pids():
        argv = cmdline(pid)
        if "openeas.gateway" in argv and "--name" in argv and group_leader(pid):
            i = argv.index("--name")
            if (
                i + 1 < len(argv)
                and environ_value(pid, CONFIG_ENV) is not None
                and environ_has(pid, STORE_URL_ENV, store_url)
            ):
                found[pid] = argv[i + 1]
    return found


async def stop_group(pid: int, grace_s: float) -> None:
    """SIGTERM process group `pid` (not our child), SIGKILL it after `grace_s`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait_gone(pid), grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def gateway_listeners(path: Path) -> dict[str, str]:
    """The listeners in the ready line of the gateway process that writes `path` now (the last
    one started there), kind -> host:port; empty before it is ready."""
    try:
        with open(path, "rb") as f:
            f.seek(_last_start(path))
            text = f.read().decode(errors="replace")
    except OSError:
        return {}
    ready = [line for line in text.splitlines() if line.startswith("openeas-gateway ") and " ready" in line]
    if not ready:
        return {}
    bound = parse_ready_line(ready[-1])
    bound.pop("metrics", None)
    return bound


def _last_start(path: Path) -> int:
    """The offset after the last "starting gateway" line of an output file (0: none)."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    offset = 0
    at = 0
    for line in data.splitlines(keepends=True):
        at += len(line)
        if line.startswith(MARK.encode()) and b" starting gateway " in line:
            offset = at
    return offset


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class GatewayManager:
    """The supervisors of every gateway this server runs, by name."""

    def __init__(
        self,
        registry: Registry,
        store_url: str,
        log_dir: Path,
        *,
        settings: SupervisorSettings | None = None,
        on_pids: Callable[[], None] = lambda: None,
    ):
        self.registry = registry
        self.store_url = store_url
        self.log_dir = log_dir
        self.settings = settings or SupervisorSettings()
        self.on_pids = on_pids
        self.lock = asyncio.Lock()  # create / modify / delete of gateways, one at a time
        self._supervisors: dict[str, GatewaySupervisor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._written: dict[str, str] = {}  # status last written to the store, by gateway
        self._writes: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()  # status writes land in the order they happened

    def get(self, name: str) -> GatewaySupervisor | None:
        return self._supervisors.get(name)

    def names(self) -> list[str]:
        return sorted(self._supervisors)

    def leader_pids(self) -> list[int]:
        return [pid for s in self._supervisors.values() if (pid := s.pid)]

    def start(self, name: str, workers: int = 1) -> GatewaySupervisor:
        """Start supervising gateway `name` (its record must be in the store)."""
        if name in self._supervisors:
            return self._supervisors[name]
        sup = GatewaySupervisor(
            name,
            self.store_url,
            self.log_dir,
            workers=workers,
            settings=self.settings,
            registry=self.registry,
        )
        sup.on_change = lambda: self._changed(sup)
        self._supervisors[name] = sup
        self._tasks[name] = asyncio.get_running_loop().create_task(sup.run(), name=f"gateway {name}")
        return sup

    async def stop(self, name: str, status: str | None = None) -> None:
        sup = self._supervisors.get(name)
        if sup is None:
            return
        await sup.stop(status)
        task = self._tasks.pop(name, None)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._supervisors.pop(name, None)
        self._written.pop(name, None)
        self.on_pids()

    async def stop_strays(self) -> None:
        """Stop the gateway processes a previous server started for this registry on this
        machine whose gateway this server does not run (its record was deleted meanwhile)."""
        for pid, name in (await asyncio.to_thread(supervised_gateways, self.store_url)).items():
            if name not in self._supervisors:  # a supervised one adopts or replaces its own
                log.info("gateway %s: stopping pid %d left by a previous server (no such gateway)", name, pid)
                await stop_group(pid, self.settings.grace_s)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(n) for n in list(self._supervisors)), return_exceptions=True)
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5)

    def _changed(self, sup: GatewaySupervisor) -> None:
        self.on_pids()
        if self._written.get(sup.name) == sup.status or self._supervisors.get(sup.name) is not sup:
            return
        self._written[sup.name] = sup.status
        task = asyncio.get_running_loop().create_task(self._write_status(sup.name, sup.status))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_status(self, name: str, status: str) -> None:
        try:
            async with self._write_lock:
                await asyncio.to_thread(self.registry.set_gateway_status, name, status)
        except Exception as exc:
            log_failure(log, f"gateway {name}: cannot write status {status}", exc)
