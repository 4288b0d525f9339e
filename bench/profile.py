"""Sample the gateway with py-spy while wrk loads it, and summarise where the time goes."""

from __future__ import annotations

import re
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

# Frames that mean "waiting for work": the event loop's poll, not request handling.
LINE_RE = re.compile(r":\d+\)$")
IDLE_MARKERS = ("select (selectors.py", "_run_once (asyncio/base_events.py", "poll (", "epoll")


def record(
    py_spy: str, pid: int, seconds: int, out: Path, fmt: str, native: bool = False, rate: int = 250
) -> tuple[bool, str]:
    """py-spy record for `seconds`; returns (ok, message). `native` adds C frames (and pauses the
    process while sampling, so it runs at a lower rate)."""
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "-d",
        str(seconds),
        "-r",
        str(rate),
        "-o",
        str(out),
        "--format",
        fmt,
        *(["--native"] if native else ["--nonblocking"]),
    ]
    if native:
        argv[argv.index("-r") + 1] = str(min(rate, 100))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired:
        return False, "py-spy timed out"
    text = (done.stdout + done.stderr).strip()
    return done.returncode == 0 and out.exists(), text[-1500:]


def run_during(
    load: Any, py_spy: str, pid: int, seconds: int, out: Path, fmt: str, native: bool = False
) -> tuple[bool, str]:
    """Start `load()` (a wrk run) in a thread, sample the gateway meanwhile, wait for both."""
    holder: dict[str, Any] = {}

    def target() -> None:
        try:
            holder["result"] = load()
        except Exception as exc:  # reported with the profile, never fatal
            holder["error"] = repr(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    threading.Event().wait(1.0)  # let the load reach steady state
    ok, msg = record(py_spy, pid, seconds, out, fmt, native)
    thread.join(timeout=seconds + 120)
    if "error" in holder:
        msg += f"\nload failed: {holder['error']}"
    return ok, msg


def _function(frame: str) -> str:
    """`name (file.py:123)` -> `name (file.py)`: samples of one function, all its lines."""
    return LINE_RE.sub(")", frame)


def summarise(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's raw (collapsed) output, per function and
    (self time only) per line. Time spent in C (uvloop, send/recv system calls, httptools) is
    charged to the Python line that called into it; the loop's own C work to `Runner.run`."""
    self_lines: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    incl_funcs: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        if any(m in leaf for m in IDLE_MARKERS):
            idle += count
        self_lines[leaf] += count
        self_funcs[_function(leaf)] += count
        for func in {_function(f) for f in frames}:
            incl_funcs[func] += count
    busy = max(1, total - idle)

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {
                "frame": f,
                "samples": c,
                "pct_of_samples": 100.0 * c / max(1, total),
                "pct_of_busy": 100.0 * c / busy,
            }
            for f, c in counter.most_common(top + 10)
            if not any(m in f for m in IDLE_MARKERS)
        ][:top]

    return {
        "samples": total,
        "idle_samples": idle,
        "top_self": rows(self_funcs),
        "top_self_lines": rows(self_lines),
        "top_inclusive": rows(incl_funcs),
    }
