"""Processors as real subprocesses (`python -m <module> --model-path ... --port 0`, started by
tests/harness.py), and the official SDK against them."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from openeas.processors import known_processors
from tests.harness import start_processor, terminate, wait_for

REPO = Path(__file__).resolve().parents[2]
SDK_CLIENT = Path(__file__).with_name("sdk_client.py")


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextmanager
def processor(
    name: str,
    model_path: str | Path,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> Iterator[Running]:
    """Start processor `name` on port 0 (tests/harness.py reads the port from its ready line) and
    wait until `GET /health` answers; stop it afterwards."""
    proc, port, log_path = start_processor(
        known_processors()[name], model_path, tmp, *extra, env=env, timeout=timeout
    )
    running = Running(name, port, proc, log_path)
    try:
        wait_for(
            lambda: (
                requests.get(f"{running.url}/health", timeout=1).status_code == 200 or proc.poll() is not None
            ),
            timeout,
            f"processor {name} healthy",
        )
        if proc.poll() is not None:
            raise AssertionError(f"processor {name} exited {proc.returncode}:\n{running.log()}")
        yield running
    finally:
        terminate(proc, timeout=10)


def run_sdk(eas_python: Path, port: int, calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the official eas-prediction SDK (its own venv) against a processor; see sdk_client.py."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [str(eas_python), str(SDK_CLIENT), f"127.0.0.1:{port}"],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(f"sdk client failed:\n{result.stdout}\n{result.stderr}")
    out: list[dict[str, Any]] = json.loads(result.stdout)
    return out
