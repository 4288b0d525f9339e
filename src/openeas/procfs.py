"""Small reads of process state from the kernel (Linux /proc), shared by the CLI, the control
plane and the local runtime."""

from __future__ import annotations

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
