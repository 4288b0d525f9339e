"""Kill local instance processes that the registry does not know: orphans of a crashed server.

Instances run in their own sessions, so they outlive a control server killed with SIGKILL. The
ones the registry has a row for are found again on the next start (`Reconciler.recover`; a row
is written before its instance starts). One window leaves an instance with no row at all:
between a delete committing (the service and its instance rows go in one transaction) and its
instances being stopped (drain, then SIGTERM). Such a process would hold its port and memory for
ever, serving nobody.

So on start, before `recover`, the local runtime's processes are listed from /proc: a process
whose environment carries `OPENEAS_INSTANCE_ID` and whose working directory is under this data
dir's `work/` folder (the local runtime starts every instance there; another data dir's
instances are not ours) is an instance of ours; its process group is killed when its id has no
row in the registry.

Queue servers (one per Async service, `python -m openeas.queue`, in their own sessions too)
outlive a killed server the same way, and the next one starts its own: the old one is found by
its command line and the store URL in its environment, and stopped when its parent is no longer
an openeas process (a live server's own queue servers are left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from openeas.config import STORE_URL_ENV
from openeas.procfs import stat_fields
from openeas.runtime.local import INSTANCE_ENV
from openeas.store import Registry

log = logging.getLogger("openeas.control")

KILL_WAIT_S = 3.0


def instance_processes(data_dir: Path) -> dict[int, tuple[str, int]]:
    """pid -> (instance id, process group) of every process running a local instance of the
    server whose data dir is `data_dir`."""
    work = str((data_dir / "work").resolve()) + os.sep
    marker = f"{INSTANCE_ENV}=".encode()
    found: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            if not (cwd + os.sep).startswith(work):
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        ids = [v[len(marker) :] for v in environ.split(b"\0") if v.startswith(marker)]
        fields = stat_fields(entry)
        if ids and fields is not None and len(fields) > 2 and fields[0] not in ("Z", "X"):
            found[int(entry)] = (ids[0].decode(errors="replace"), int(fields[2]))
    return found


async def sweep_orphans(data_dir: Path, registry: Registry) -> list[str]:
    """Kill (SIGTERM, then SIGKILL) the process groups of instances with no row in `registry`.
    Returns the instance ids that were killed."""
    known = {row.id for row in await asyncio.to_thread(registry.list_instances)}
    running = await asyncio.to_thread(instance_processes, data_dir)
    groups = {pgid: instance for instance, pgid in running.values() if instance not in known}
    if not groups:
        return []
    for pgid, instance in groups.items():
        log.warning("instance %s (process group %d) has no row in the registry: stopping it", instance, pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_WAIT_S
    while loop.time() < deadline:
        left = await asyncio.to_thread(instance_processes, data_dir)
        if not any(pgid in groups for _, pgid in left.values()):
            break
        await asyncio.sleep(0.1)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return sorted(set(groups.values()))


def orphan_queue_servers(store_url: str) -> list[int]:
    """Queue server processes of the registry at `store_url` whose parent is not openeas."""
    want = f"{STORE_URL_ENV}={store_url}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if b"openeas.queue" not in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0"):
                continue
            if want not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            fields = stat_fields(entry)
            # the control plane starts each in a session of its own (one typed in a shell is not
            # a session leader and is left alone)
            if fields is None or fields[0] in ("Z", "X") or fields[3] != entry:
                continue
            parent = Path(f"/proc/{fields[1]}/cmdline").read_bytes() if fields[1] != "0" else b""
        except OSError:
            continue
        if b"openeas" not in parent:
            found.append(int(entry))
    return found


async def sweep_queue_servers(store_url: str) -> list[int]:
    """Stop (SIGTERM, then SIGKILL) the queue servers a killed server left. Returns their pids."""
    pids = await asyncio.to_thread(orphan_queue_servers, store_url)
    for pid in pids:
        log.warning("queue server pid %d was left by a previous server: stopping it", pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_WAIT_S
    while (
        pids
        and loop.time() < deadline
        and set(pids) & set(await asyncio.to_thread(orphan_queue_servers, store_url))
    ):
        await asyncio.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return pids
