"""Start a real `openeas server` on free loopback ports and drive it with the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    data_dir: Path
    api_port: int
    gateway_port: int
    vpc_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin_token").read_text().strip()

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "openeas", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"openeas {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def cli_json(self, *args: str, timeout: float = 120) -> Any:
        return json.loads(self.cli(*args, "--json", timeout=timeout).stdout)

    def deploy(self, spec: dict[str, Any], tmp: Path, timeout: float = 60) -> Any:
        path = tmp / f"{spec['metadata']['name']}.json"
        path.write_text(json.dumps(spec))
        return self.cli_json("create", str(path), "--wait", timeout=timeout)

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(data_dir: Path, extra_args: tuple[str, ...] = ()) -> RunningServer:
    api_port, gw_port, vpc_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENEAS_")}
    env["OPENEAS_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the server process for its lifetime
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openeas",
            "server",
            "--data-dir",
            str(data_dir),
            "--api-port",
            str(api_port),
            "--gateway-port",
            str(gw_port),
            "--vpc-port",
            str(vpc_port),
            *extra_args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(data_dir, api_port, gw_port, vpc_port, proc, log_path, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"openeas server exited {proc.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(server.api + "/api/v2/health", timeout=1).ok and _gateway_up(gw_port, vpc_port):
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"openeas server did not become ready:\n{log_path.read_text()}")


def _gateway_up(*ports: int) -> bool:
    for port in ports:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
    return True


def service_spec(name: str, command: str, **metadata: Any) -> dict[str, Any]:
    """A custom-container service spec running `command` (which must listen on $PORT)."""
    meta: dict[str, Any] = {"name": name, "instance": 1}
    meta.update(metadata)
    return {
        "metadata": meta,
        "containers": [{"command": command, "port": 8000, "health_check": {"http_get": {"path": "/health"}}}],
    }


def app_command(module_file: str) -> str:
    return f"{sys.executable} {REPO / 'tests' / 'e2e' / 'apps' / module_file}"


def demo_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(
        (REPO / "src" / "openeas" / "examples" / "chat_service" / "spec.json").read_text()
    )
    return spec
