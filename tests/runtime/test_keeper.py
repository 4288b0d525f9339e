"""The keeper (openeas.runtime.keeper) on its own, with real processes and no Ray.

A stand-in parent (a plain python process, as the Ray actor's worker would be) starts the keeper,
which starts a shell that runs a child in its group and a `sleep` that escapes with setsid().
Measured: the keeper reports the leader's pid and its exit status; when the leader exits, the
rest of its group and the escapee are killed; when the parent is SIGKILLed, everything goes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PARENT = """
import subprocess, sys, time
keeper = subprocess.Popen(
    [sys.executable, "-m", "openeas.runtime.keeper", "--watch", str(__import__("os").getpid()),
     "--log", sys.argv[1], "--", "/bin/sh", "-c", sys.argv[2]],
    stdout=subprocess.PIPE, text=True, start_new_session=True)
print("keeper", keeper.pid, flush=True)
import os, signal, threading

def ray_like_exit(*_):
    # what a Ray worker does when it exits normally: SIGKILL its direct children, then exit
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            if ppid == str(os.getpid()):
                os.kill(int(entry), signal.SIGKILL)
    os._exit(0)

signal.signal(signal.SIGUSR1, ray_like_exit)
for line in keeper.stdout:
    print(line.strip(), flush=True)
time.sleep(1000)
"""

# a child in the group, an escapee in its own session; the shell then waits or exits
TREE = "sleep {tag}0 & setsid sleep {tag}1 & echo started; {end}"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def sleeping(word: str) -> list[int]:
    """Pids of `sleep <word>` processes (the tree's members are told apart by their argument)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[:2] == [b"sleep", word.encode()] and alive(int(entry)):
                out.append(int(entry))
    return out


def members(tag: str) -> tuple[list[int], list[int]]:
    """The tree's child and escapee, once both have exec'd `sleep` (the shell echoes "started"
    right after forking them, which can be before)."""
    assert wait_for(lambda: len(sleeping(f"{tag}0")) == 1 and len(sleeping(f"{tag}1")) == 1)
    return sleeping(f"{tag}0"), sleeping(f"{tag}1")


def wait_for(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def start(tmp: Path, end: str, tag: str) -> tuple[subprocess.Popen[str], int, int]:
    """The stand-in parent, the (detached) keeper's pid and the instance leader's pid."""
    log = tmp / "instance.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(log), TREE.format(end=end, tag=tag)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert parent.stdout is not None
    parent.stdout.readline()  # "keeper <pid>": the process that forks the keeper and exits
    _, leader_pid, keeper_pid = parent.stdout.readline().split()
    leader, keeper = int(leader_pid), int(keeper_pid)
    # detached: not a direct child of the parent (whose normal exit would SIGKILL it)
    assert Path(f"/proc/{keeper}/stat").read_text().rsplit(")", 1)[1].split()[1] != str(parent.pid)
    assert wait_for(lambda: "started" in log.read_text())
    return parent, keeper, leader


def test_leader_exit_kills_the_rest_and_reports_the_status(tmp_path: Path) -> None:
    parent, keeper, leader = start(tmp_path, "sleep 0.5; exit 3", "71")
    try:
        assert os.getpgid(leader) == leader  # the instance is a group of its own
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "exit 3"
        assert wait_for(lambda: not sleeping("710") and not sleeping("711"))
        assert wait_for(lambda: not alive(keeper))
    finally:
        parent.kill()
        parent.wait()


def test_parent_death_kills_the_group_and_the_escapee(tmp_path: Path) -> None:
    parent, keeper, leader = start(tmp_path, "wait", "72")
    try:
        child, escapee = members("72")
        assert os.getsid(escapee[0]) != os.getsid(leader)  # it left the instance's session
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not any(alive(p) for p in (leader, keeper, child[0], escapee[0])))
    finally:
        parent.kill()
        parent.wait()


def test_a_parent_that_kills_its_direct_children_still_leaves_nothing(tmp_path: Path) -> None:
    """Ray's normal worker exit SIGKILLs the worker's direct children: the keeper is not one."""
    parent, keeper, leader = start(tmp_path, "wait", "73")
    try:
        child, escapee = members("73")
        parent.send_signal(signal.SIGUSR1)
        parent.wait(10)
        assert wait_for(lambda: not any(alive(p) for p in (leader, keeper, child[0], escapee[0])))
    finally:
        parent.kill()
        parent.wait()
