"""Gateway processes: one supervised process group per gateway (the shared one and dedicated ones).

Each gateway runs as `python -m openeas.gateway --name NAME [--workers N]` (the store URL in
$OPENEAS_STORE_URL and the Redis URL in $OPENEAS_REDIS_URL, not on the command line) in its
own session (process group), so load on, or a crash of, one gateway does not touch another: each
has its own listeners, limits and counters. The supervisor

- reads the gateway's stdout for its ready line (`openeas-gateway NAME ready internet=h:p ...`),
  which gives the real bound addresses (port 0 in the record works);
- forwards the gateway's stderr to the server log and keeps its last lines for status messages;
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
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openeas.control.errors import log_failure
from openeas.gateway import REDIS_URL_ENV, STORE_URL_ENV
from openeas.store import Registry

log = logging.getLogger("openeas.control")

EXIT_CONFIG = 2  # the gateway's exit code for a port it cannot bind, a bad record or certificate


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
        return "could not be started"
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
    """Runs one gateway process group and restarts it when it dies. `run()` is its task."""

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
    ):
        self.name = name
        self.store_url = store_url
        self.log_dir = log_dir
        self.workers = workers
        self.python = python
        self.on_change = on_change
        self.settings = settings or SupervisorSettings()
        self.status = "Creating"
        self.message = ""
        self.bound: dict[str, str] = {}  # kind -> host:port, from the ready line
        self.metrics: list[str] = []  # host:port of each process's metrics listener
        self.ready = asyncio.Event()
        self.ready_line = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = asyncio.Event()
        self._kick = asyncio.Event()  # cut a backoff short (restart)
        self._restart = False
        self._stderr_tail: deque[str] = deque(maxlen=5)

    # -- state -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

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

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        backoff = s.backoff_initial_s
        failures = 0  # exits in a row before it was ready
        self.log_dir.mkdir(parents=True, exist_ok=True)
        while not self._stopping.is_set():
            started = time.monotonic()
            self.starts += 1
            self._restart = False
            self._stderr_tail.clear()
            code: int | None = None
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.command(),
                    env=self.environment(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                log.error("cannot start gateway %s: %s", self.name, exc)
                self._stderr_tail.append(f"cannot start the gateway process: {exc}")
            else:
                self.on_change()
                code = await self._follow(self.proc)
            was_ready = self.ready.is_set()
            self.ready.clear()
            self.bound = {}
            self.metrics = []
            self.on_change()
            if self._stopping.is_set():
                break
            if self._restart:  # asked for (new listeners, TLS or workers): at once, fresh counters
                failures, backoff = 0, s.backoff_initial_s
                continue
            if time.monotonic() - started > s.backoff_reset_s:
                backoff = s.backoff_initial_s
            failures = 0 if was_ready else failures + 1
            reason = self._reason(code)
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

    def _reason(self, code: int | None) -> str:
        said = [line for line in self._stderr_tail if line.startswith("openeas-gateway:")]
        detail = (said or list(self._stderr_tail) or [""])[-1].removeprefix("openeas-gateway:").strip()
        return f"{exit_text(code)}: {detail}" if detail else exit_text(code)

    async def _follow(self, proc: asyncio.subprocess.Process) -> int:
        self.ready_line = ""
        readers = [
            asyncio.ensure_future(self._read_stdout(proc)),
            asyncio.ensure_future(self._read_stderr(proc)),
        ]
        code = await proc.wait()
        # Workers of a `--workers N` gateway outlive a parent that was killed: end the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, pending = await asyncio.wait(readers, timeout=1.0)
        for task in pending:
            task.cancel()
        return code

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            if not self.ready.is_set() and f"openeas-gateway {self.name} ready" in text:
                self.ready_line = text
                bound = parse_ready_line(text)
                self.metrics = metrics_list(bound.pop("metrics", ""))
                self.bound = bound  # the data-plane listeners only
                self.ready.set()
                log.info("gateway %s ready (pid %d): %s", self.name, proc.pid, text)
                self._set("Running", "")
            elif text:
                log.info("gateway %s: %s", self.name, text)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                log.info("gateway %s: %s", self.name, text)

    # -- control ---------------------------------------------------------------------------
    def _terminate(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

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
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self._terminate()
        try:
            await asyncio.wait_for(proc.wait(), self.settings.grace_s + 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


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
        sup = GatewaySupervisor(name, self.store_url, self.log_dir, workers=workers, settings=self.settings)
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
