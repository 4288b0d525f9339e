"""Run one wrk cell and return its numbers."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua" / "report.lua"


@dataclass(frozen=True)
class Cell:
    path: str  # "direct" | "nginx" | "gateway" (or a variant name)
    case: str  # "GET" | "POST 6KB" | "POST 900KB"
    conns: int
    url: str
    method: str
    body_file: Path | None
    auth: str


def threads_for(conns: int) -> int:
    # Two cores shared by wrk, the proxy and the upstream: one wrk thread for one connection,
    # two for 64 connections.
    return 1 if conns == 1 else 2


def run_wrk(cell: Cell, duration_s: float, timeout_s: float = 10.0) -> dict[str, Any]:
    """Run wrk once (bounded by a subprocess timeout) and return its parsed result."""
    env = dict(os.environ)
    env["BENCH_METHOD"] = cell.method
    env["BENCH_AUTH"] = cell.auth
    env["BENCH_BODY_FILE"] = str(cell.body_file) if cell.body_file else ""
    argv = [
        "wrk",
        f"-t{threads_for(cell.conns)}",
        f"-c{cell.conns}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={int(timeout_s)}s",
        "--latency",
        "-s",
        str(LUA),
        cell.url,
    ]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    secs = data["duration_us"] / 1e6
    data["rps"] = data["requests"] / secs if secs > 0 else 0.0
    data["error_count"] = sum(data["errors"].values())
    data.update(path=cell.path, case=cell.case, conns=cell.conns, method=cell.method, url=cell.url)
    return data
