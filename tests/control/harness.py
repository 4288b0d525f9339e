"""A real `openeas server` subprocess on free loopback ports, for the control and CLI tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

# An instance: GET /health, GET /pid, GET /env?name=X, POST /crash (exits 3). Listens on $PORT.
APP = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)
    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send(200, {"ok": True})
        elif url.path == "/pid":
            self._send(200, {"pid": os.getpid(), "instance": os.environ.get("OPENEAS_INSTANCE_ID")})
        elif url.path == "/env":
            self._send(200, {"value": os.environ.get(parse_qs(url.query)["name"][0])})
        else:
            self._send(404, {})
    def do_POST(self):
        if self.path == "/crash":
            os._exit(3)
        self._send(404, {})
print("app listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def wait_for(check: Callable[[], T], timeout: float = 20, what: str = "condition", every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not reaped by PID 1 in some containers) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


@dataclass
class Server:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    api: str
    internet: str
    vpc: str
    env: dict[str, str]

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin_token").read_text().strip()

    def client(self, token: str | None = None) -> httpx.Client:
        tok = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "openeas", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"openeas {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.cli(*args, "--json", timeout=timeout).stdout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENEAS_")}
    env["OPENEAS_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_server(data_dir: Path, *extra: str, timeout: float = 30) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = clean_env(data_dir)
    log_path = data_dir.parent / f"{data_dir.name}-server-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openeas", "server", "--data-dir", str(data_dir), "--api-port", "0",
             "--gateway-port", "0", "--vpc-port", "0", "--grace", "3", *extra],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"openeas server exited {proc.returncode}:\n{log_path.read_text()}")
        if "openeas server ready" in log_path.read_text(errors="replace"):
            info = json.loads((data_dir / "server.json").read_text())
            return Server(
                data_dir,
                proc,
                log_path,
                info["api"],
                info["gateway"]["internet"],
                info["gateway"]["vpc"],
                env,
            )
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"openeas server not ready in {timeout} s:\n{log_path.read_text()}")


def serving(data_dir: Path, *extra: str) -> Iterator[Server]:
    """A module fixture's body: a server for the module; at the end it must stop cleanly (exit 0,
    server.json removed) and its log must not hold the admin token."""
    srv = start_server(data_dir, *extra)
    try:
        yield srv
    finally:
        code = srv.stop()
        log = srv.log()
        assert code == 0, log
        assert srv.admin_token not in log, "the admin token reached the server log"
        assert not (srv.data_dir / "server.json").exists()


def app_spec(tmp: Path, name: str, instance: int = 1, **container: Any) -> dict[str, Any]:
    script = tmp / "app.py"
    if not script.exists():
        script.write_text(APP)
    return {
        "metadata": {"name": name, "instance": instance},
        "containers": [
            {
                "command": f"{sys.executable} {script}",
                "port": 8000,
                "health_check": {"http_get": {"path": "/health"}},
                **container,
            }
        ],
    }
