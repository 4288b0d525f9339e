"""The keeper: a small watchdog process between a runtime and one instance's processes.

    python -m openeas.runtime.keeper --watch PID --log FILE -- /bin/sh -c COMMAND

Why it exists: Ray cleans up what a worker started only in some cases. With its defaults
(`RAY_kill_child_processes_on_worker_exit`) a worker kills its *direct* children when it exits
normally; a worker that is SIGKILLed (OOM killer, `kill -9`, a crash) kills nothing, grandchildren
are never reached, and when the raylet itself dies (node loss) nothing on that node is cleaned up.
The raylet subreaper option is off by default and also dies with the raylet. An instance whose
actor died would keep its port, its GPU memory and keep answering a gateway that thinks it gone.

So the runtime starts this keeper (in its own session, so signals aimed at the worker's process
group do not reach it) and the keeper starts the instance (in a session of its own, so the
instance's whole tree is one process group the runtime can signal). The keeper:

- marks itself a child subreaper (PR_SET_CHILD_SUBREAPER), so descendants that leave the group
  with setsid() and are orphaned come back to it instead of to init;
- writes `pid <leader>` on stdout once the instance runs;
- when the instance's leader exits: SIGKILLs what is left of its group and every descendant
  it holds, writes `exit <code>` (negative: killed by that signal) and exits;
- when the process that started it (`--watch`, the Ray actor) is gone, or on SIGTERM/SIGINT/
  SIGHUP: SIGKILLs the instance's group and every descendant, and exits.

It detaches (forks; the first process exits at once), so it is not a direct child of the Ray
worker: a worker that exits normally SIGKILLs its direct children
(`RAY_kill_child_processes_on_worker_exit`, on by default), which would kill the keeper before it
could clean up and orphan the instance. The watched process is followed through a pidfd (immune
to pid reuse), not through getppid().

It imports nothing heavy (it starts for every instance) and polls every 0.1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from openeas.procfs import stat_fields

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.1


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


def _die_with_keeper() -> None:
    # In the instance leader, before exec: if the keeper is SIGKILLed, the leader gets SIGKILL
    # too instead of living on under init (the keeper is single-threaded, so "parent thread
    # exited" means the keeper exited).
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)
        if fields is not None and len(fields) > 1 and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap() -> list[tuple[int, int]]:
    """Reap every exited child (the instance leader and orphans handed to us as subreaper)."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def kill_everything(pgid: int) -> None:
    """SIGKILL the instance's group, then every descendant this keeper holds, until none is left."""
    _kill_group(pgid, signal.SIGKILL)
    me = os.getpid()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        kids = children_of(me)
        if not kids:
            break
        for kid in kids:
            with contextlib.suppress(OSError):
                pg = os.getpgid(kid)
                if pg != os.getpgrp():
                    _kill_group(pg, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(kid, signal.SIGKILL)
        time.sleep(0.02)
        _reap()
    _reap()


def _say(line: str) -> None:
    with contextlib.suppress(OSError):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _gone(pidfd: int) -> bool:
    """True once the process behind `pidfd` has exited (the fd becomes readable)."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


def run(pidfd: int, log: str, command: Sequence[str], cwd: str | None) -> int:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with open(log, "ab") as out:
        leader = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_keeper,  # safe here: the keeper is single-threaded
        )
    _say(f"pid {leader.pid} {os.getpid()}")
    while True:
        for pid, status in _reap():
            if pid == leader.pid:
                # The instance is its process group: nothing of it may outlive its leader.
                kill_everything(leader.pid)
                _say(f"exit {_returncode(status)}")
                return 0
        if stop_requested or _gone(pidfd):
            kill_everything(leader.pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(leader.pid, 0)
            why = "its runtime process died" if not stop_requested else f"signal {stop_requested[0]}"
            _say(f"exit {-signal.SIGKILL} ({why})")
            return 0
        time.sleep(POLL_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openeas.runtime.keeper", description=__doc__)
    parser.add_argument("--watch", type=int, required=True, help="pid of the process to outlive")
    parser.add_argument("--log", required=True, help="file the instance's stdout and stderr go to")
    parser.add_argument("--cwd", default=None, help="working directory of the instance")
    parser.add_argument("command", nargs="+", help="the instance's command line (after --)")
    args = parser.parse_args(argv)
    if os.getppid() != args.watch:
        parser.error(f"--watch {args.watch} must be the keeper's parent (it is {os.getppid()})")
    pidfd = os.pidfd_open(args.watch)  # taken while the parent surely is the one we mean
    if os.fork() > 0:
        os._exit(0)  # detach: the keeper must not be a direct child of the Ray worker
    return run(pidfd, args.log, args.command, args.cwd)


if __name__ == "__main__":
    sys.exit(main())
