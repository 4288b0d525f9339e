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
(children included, shared pages counted in each process). One `MemoryWatch` per runtime reads
the stat file of every process once per interval, for all the instances it watches (a scan per
instance would cost instances x processes reads; /proc/<pid>/task/*/children would be cheaper but
needs a kernel built with CONFIG_PROC_CHILDREN, which this project's test machines lack).
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
WATCH_INTERVAL_S = 0.5  # one /proc scan per interval for every watched instance
_RSS_FIELD = 21  # in stat_fields(): man 5 proc's field 24, resident set size in pages


def rss_by_group(groups: set[int]) -> dict[int, int]:
    """Resident memory, in bytes, of the live processes of each process group in `groups`
    (groups with no live process are absent)."""
    page = os.sysconf("SC_PAGE_SIZE")
    wanted = {str(g): g for g in groups}
    totals: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = stat_fields(entry)
            if fields is None or len(fields) <= _RSS_FIELD or fields[0] in ("Z", "X"):
                continue
            group = wanted.get(fields[2])
            if group is not None:
                totals[group] = totals.get(group, 0) + int(fields[_RSS_FIELD]) * page
    return totals


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every live process in process group `pgid`, in bytes."""
    return rss_by_group({pgid}).get(pgid, 0)


@dataclass(frozen=True)
class MemoryExceeded:
    limit_mib: int
    rss_bytes: int  # what was measured when it was killed

    def describe(self) -> str:
        used = self.rss_bytes / MIB
        return f"exceeded its memory limit (metadata.memory {self.limit_mib} MiB; it used {used:.0f} MiB)"


class MemoryLimit:
    """One watched instance (its process group); `exceeded` is set when it was killed."""

    def __init__(self, watch: MemoryWatch, pgid: int, limit_mib: int, log_path: Path) -> None:
        self.watch = watch
        self.pgid = pgid
        self.limit_mib = limit_mib
        self.log_path = log_path
        self.exceeded: MemoryExceeded | None = None

    def cancel(self) -> None:
        """The instance exited: stop watching it."""
        self.watch.limits.pop(self.pgid, None)

    def kill(self, rss: int) -> None:
        self.exceeded = MemoryExceeded(self.limit_mib, rss)
        with contextlib.suppress(OSError), open(self.log_path, "ab") as log:
            when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"{MARK} {when} {self.exceeded.describe()}: killing it\n".encode())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)


class MemoryWatch:
    """Watches every instance with a limit, with one /proc scan per interval (one per runtime)."""

    def __init__(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.limits: dict[int, MemoryLimit] = {}  # process group -> its limit
        self._task: asyncio.Task[None] | None = None

    def watch(self, pgid: int, limit_mib: int, log_path: Path) -> MemoryLimit:
        """Start watching the instance whose process group is `pgid` (in a running loop)."""
        limit = self.limits[pgid] = MemoryLimit(self, pgid, limit_mib, log_path)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory limits")
        return limit

    async def _run(self) -> None:
        while self.limits:
            await asyncio.sleep(self.interval_s)
            watched = dict(self.limits)
            totals = await asyncio.to_thread(rss_by_group, set(watched))
            for pgid, limit in watched.items():
                rss = totals.get(pgid, 0)
                if rss > limit.limit_mib * MIB and self.limits.get(pgid) is limit:
                    limit.kill(rss)
                    limit.cancel()
