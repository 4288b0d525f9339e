"""Start a processor as a real subprocess (`python -m <module> --model-path ... --port N`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from openeas.processors import known_processors

REPO = Path(__file__).resolve().parents[2]
SDK_CLIENT = Path(__file__).with_name("sdk_client.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """Start processor `name` and wait until `GET /health` answers; stop it afterwards."""
    port = free_port()
    log_path = tmp / f"{name}-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        known_processors()[name],
        "--model-path",
        str(model_path),
        "--port",
        str(port),
    ]
    cmd += list(extra)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    running = Running(name, port, proc, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"processor {name} exited {proc.returncode}:\n{running.log()}")
            try:
                if requests.get(f"{running.url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"processor {name} not ready after {timeout}s:\n{running.log()}")
            time.sleep(0.1)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
