"""Small reads of process state from the kernel (Linux /proc), shared by the CLI, the control
plane and the local runtime, and waiting for a process that is not our child: instances and
gateways a previous control plane started are adopted by the next one (docs/distributed.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while a process `pid` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after "pid (comm) ": [0] state, [1] ppid, [2] pgrp,
    [11] utime, [12] stime (man 5 proc numbers them from 3). None when the process is gone.

    comm may hold spaces and parentheses, so the split starts after the last ")"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def running(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (a dead child nobody reaped yet)."""
    fields = stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def group_leader(pid: int) -> bool:
    """True when `pid` runs and leads its own process group (started with setsid)."""
    fields = stat_fields(pid)
    return fields is not None and len(fields) > 2 and fields[0] not in ("Z", "X") and fields[2] == str(pid)


def environ_has(pid: int, name: str, value: str) -> bool:
    """True when process `pid` was started with `name=value` in its environment (pids get reused,
    so this is how a process is recognised as the one we started)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{name}={value}".encode() in environ.split(b"\0")


def environ_value(pid: int, name: str) -> str | None:
    """The value of `name` in process `pid`'s environment (as it was started), or None."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{name}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def cmdline(pid: int | str) -> list[str]:
    """Process `pid`'s argv (empty when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stdout_path(pid: int) -> Path | None:
    """The regular file process `pid` writes its stdout to, or None (a pipe, a tty, gone)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return None
    path = Path(target.removesuffix(" (deleted)"))
    return path if target.startswith("/") and not target.endswith(" (deleted)") else None


def all_pids() -> list[int]:
    try:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


async def wait_gone(pid: int, poll_s: float = 0.2) -> None:
    """Return once process `pid`, which need not be our child, has exited.

    A pidfd turns readable when the process ends (Linux 5.3+); without one, /proc is polled. A
    zombie counts as ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):
        while running(pid):
            await asyncio.sleep(poll_s)
        return
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    try:
        loop.add_reader(fd, readable)
        try:
            # the pidfd also stays quiet for a zombie whose exit was seen before the reader
            # was added on some kernels: check /proc as well, now and then
            while running(pid):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), 5.0)
                if ended.done():
                    return
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
