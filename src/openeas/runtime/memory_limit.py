"""`metadata.memory` for local instances: kill an instance whose memory passes its limit.

EAS (on Kubernetes) kills a container that uses more memory than it asked for (OOMKilled) and
starts it again. The local runtime does the same by watching: every `interval_s` it sums the
resident memory (RSS) of every process in the instance's process group, and when the sum passes
`metadata.memory` MiB it writes a line saying so into the instance log and kills the group with
SIGKILL. The runtime then describes the exit as "exceeded its memory limit (...)", which the
reconciler writes as the instance's message and restarts it with its usual backoff.

Why RSS watching and not the alternatives (docs/spec.md "Memory limit"):
- cgroups (the kernel's own memory limit) need root or a delegated cgroup v2 subtree, which an
  `openeas server` run by a user does not have;
- RLIMIT_AS limits address space, not memory: torch, llama.cpp and the JVM reserve far more than
  they touch, so a limit that fits their memory makes them fail at start, and a process that hits
  it gets an allocation error (MemoryError) it may catch and keep running with, not a restart.
The cost of watching: an instance can pass its limit for up to `interval_s` before it is killed
(a sudden allocation is not stopped mid-way), and the limit counts the whole process group
(children included, shared pages counted in each process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from openeas.procfs import stat_fields
from openeas.runtime.base import MARK

MIB = 1024 * 1024
WATCH_INTERVAL_S = 0.5  # one /proc scan per instance per interval
_RSS_FIELD = 21  # in stat_fields(): man 5 proc's field 24, resident set size in pages


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every live process in process group `pgid`, in bytes."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = stat_fields(entry)
            if fields is not None and len(fields) > _RSS_FIELD and fields[2] == str(pgid):
                total += int(fields[_RSS_FIELD]) * page
    return total


@dataclass(frozen=True)
class MemoryExceeded:
    limit_mib: int
    rss_bytes: int  # what was measured when it was killed

    def describe(self) -> str:
        used = self.rss_bytes / MIB
        return f"exceeded its memory limit (metadata.memory {self.limit_mib} MiB; it used {used:.0f} MiB)"


class MemoryLimit:
    """Watches one instance (its process group) and kills it when it passes `limit_mib`."""

    def __init__(self, pgid: int, limit_mib: int, log_path: Path, interval_s: float = WATCH_INTERVAL_S):
        self.pgid = pgid
        self.limit_mib = limit_mib
        self.log_path = log_path
        self.interval_s = interval_s
        self.exceeded: MemoryExceeded | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> MemoryLimit:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"memory limit {self.pgid}")
        return self

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        limit = self.limit_mib * MIB
        while True:
            rss = await asyncio.to_thread(group_rss_bytes, self.pgid)
            if rss == 0:
                return  # the group is gone
            if rss > limit:
                self.exceeded = MemoryExceeded(self.limit_mib, rss)
                with contextlib.suppress(OSError), open(self.log_path, "ab") as log:
                    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                    log.write(f"{MARK} {when} {self.exceeded.describe()}: killing it\n".encode())
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGKILL)
                return
            await asyncio.sleep(self.interval_s)
