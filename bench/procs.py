"""Processes the bench starts, and how it gets rid of them.

Every process is started in its own session (process group) and registered with a
`ProcessSet`; `ProcessSet.close()` stops the groups and any leftover descendants by pid, so
nothing survives a failure or Ctrl-C. Nothing here is module-global.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from openeas.procfs import pid_alive, stat_fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Wait (bounded) until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def raise_nofile(want: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE of this process (children inherit it). Returns the (soft, hard) reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs CAP_SYS_RESOURCE
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(want, soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)
        if fields is not None:
            out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """All live descendants of pid (children first, then theirs), read from /proc."""
    children: dict[int, list[int]] = {}
    for child, parent in _ppid_map().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    queue = [pid]
    while queue and len(found) < 100_000:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (0 when it is gone or not readable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    fields = stat_fields(pid)  # a zombie is dead for our purposes
    return bool(fields) and fields[0] != "Z"


@dataclass
class ProcessSet:
    """The processes one bench run started. close() stops all of them, descendants included."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)
    extra_pids: dict[int, str] = field(default_factory=dict)  # pid -> cmdline when seen

    def spawn(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the process set until close()
        self.logs.append(log)
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def remember_tree(self) -> None:
        """Record the current descendants of every started process (instances may start their own
        sessions), so close() can stop them even after their parent is gone."""
        for _, proc in self.procs:
            if proc.poll() is None:
                for pid in descendants(proc.pid):
                    self.extra_pids.setdefault(pid, cmdline(pid))

    def close(self, grace: float = 15.0) -> None:
        self.remember_tree()
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        # Leftovers in other sessions (instances): TERM, short wait, then KILL, by pid.
        # A pid counts as ours only while its command line is the one we saw (no pid reuse).
        left = [pid for pid, cmd in self.extra_pids.items() if _alive(pid) and cmdline(pid) == cmd]
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if _alive(pid)]
            time.sleep(0.1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for log in self.logs:
            log.close()
        self.procs.clear()
        self.logs.clear()
        self.extra_pids.clear()
