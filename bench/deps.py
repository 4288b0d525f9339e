"""Install what the bench needs when it is missing, and describe the machine it runs on."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

APT_PACKAGES = MappingProxyType({"nginx": "nginx", "wrk": "wrk"})  # tool -> Debian package
PIP_PACKAGES = MappingProxyType({"matplotlib": "matplotlib", "py-spy": "py-spy"})
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def _apt_install(packages: list[str], log: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log.append(f"cannot install {packages}: not root or no apt-get; install them and re-run")
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep the package's postinst from starting a system-wide nginx on port 80.
    added_policy = False
    if not POLICY_RC.exists():
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
        added_policy = True
    try:
        subprocess.run(["apt-get", "update"], env=env, check=False, timeout=600, capture_output=True)
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            env=env,
            check=False,
            timeout=900,
            capture_output=True,
            text=True,
        )
        log.append(f"apt-get install {' '.join(packages)}: exit {done.returncode}")
    finally:
        if added_policy:
            with contextlib.suppress(OSError):
                POLICY_RC.unlink()


def _pip_install(packages: list[str], log: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *packages],
        check=False,
        timeout=900,
        capture_output=True,
        text=True,
    )
    log.append(f"pip install {' '.join(packages)}: exit {done.returncode}")


def ensure(install: bool) -> list[str]:
    """Install missing tools (apt: nginx, wrk; pip: matplotlib, py-spy). Returns what was done."""
    log: list[str] = []
    missing_apt = [pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None]
    missing_pip = [pkg for mod, pkg in PIP_PACKAGES.items() if not _have_python_tool(mod)]
    if install and missing_apt:
        _apt_install(missing_apt, log)
    if install and missing_pip:
        _pip_install(missing_pip, log)
    for tool in APT_PACKAGES:
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: `{tool}` is required (Debian: apt-get install -y {APT_PACKAGES[tool]})")
    return log


def _have_python_tool(name: str) -> bool:
    if name == "py-spy":
        return shutil.which("py-spy") is not None
    return importlib.util.find_spec(name) is not None


def py_spy() -> str | None:
    return shutil.which("py-spy")


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    versions: dict[str, str] = {}
    for mod in ("uvloop", "httptools"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    repo = str(Path(__file__).resolve().parents[1])
    commit = _first_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    try:
        status = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        status = []
    if status:  # the gateway measured is the working tree's, not exactly the commit's
        commit += f" + {len(status)} uncommitted change(s) under src/"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "py_spy": _first_line(["py-spy", "--version"]) if py_spy() else "not installed",
        "openeas_commit": commit,
        **versions,
    }
