"""The one process harness of the tests and the bench: start real openeas processes, know when
they are ready, stop them.

Every server binds port 0 and says where it listens in a ready line, so no port is picked
before the process binds it (picking a "free" port first and passing it races with every other
process on the machine):

- `start_server`: `openeas server --api-port 0 --gateway-port 0 --vpc-port 0`; ready when its
  log has the line "openeas server ready" (printed once the shared gateway serves); the URLs
  come from the `server.json` it writes. `serving` is the body of a module fixture.
- `start_gateway`: `python -m openeas.gateway`; its ready line on stdout names each listener.
- `start_upstream`: tests/gateway/upstream_app.py; its ready line names its port.
- `start_processor`: `python -m openeas.processors.X --port 0`; its ready line names its port.

`python -m bench` (run from the repository root) imports this module too, and passes its own
`spawn` so the server lands in the bench's process set. Imports are the standard library,
httpx and openeas only.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from openeas.procfs import stat_fields

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_APP = REPO / "tests" / "gateway" / "upstream_app.py"
E2E_APPS = REPO / "tests" / "e2e" / "apps"
SERVER_READY = "openeas server ready"
T = TypeVar("T")
# (argv, log path, env) -> the started process; stdout and stderr go to the log
Spawn = Callable[[list[str], Path, dict[str, str]], "subprocess.Popen[bytes]"]


# -- waiting -----------------------------------------------------------------------------------


def wait_for(check: Callable[[], T], timeout: float = 20, what: str = "condition", every: float = 0.1) -> T:
    """Call `check` until it returns something truthy (HTTP and connection errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError, KeyError) as exc:  # OSError: requests' errors too
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def free_port() -> int:
    """A port nobody listens on right now: only for "nothing answers here" checks. Never pass it
    to a server (another process may take it first): start servers on port 0 instead."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not reaped by PID 1 in some containers) is gone."""
    fields = stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    """The first line `proc` writes to its stdout pipe (its ready line)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode()
        elif proc.poll() is not None:
            break
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr and proc.poll() is not None else ""
    raise AssertionError(f"{what} did not print its ready line (rc={proc.poll()}): {buf!r} {stderr}")


def wait_log_line(
    proc: subprocess.Popen[bytes], log_path: Path, marker: str, timeout: float, what: str
) -> str:
    """The first line of `log_path` holding `marker`, once `proc` has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        for line in text.splitlines():
            if marker in line:
                return line
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}:\n{text[-4000:]}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    raise AssertionError(f"{what} not ready in {timeout} s:\n{text[-4000:]}")


def terminate(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send `sig`, wait up to `timeout`, then kill. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


# -- openeas server ----------------------------------------------------------------------------


def clean_env(data_dir: Path) -> dict[str, str]:
    """This environment without OPENEAS_* settings, pointed at `data_dir` (the CLI finds the
    server there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENEAS_")}
    env["OPENEAS_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Server:
    """A running `openeas server` and the ways tests drive it: HTTP, the CLI, its log."""

    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    api: str
    internet: str  # the shared gateway's Internet base URL
    vpc: str
    env: dict[str, str]

    @property
    def api_port(self) -> int:
        return _port(self.api)

    @property
    def gateway_port(self) -> int:
        return _port(self.internet)

    @property
    def vpc_port(self) -> int:
        return _port(self.vpc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin_token").read_text().strip()

    def client(self, token: str | None = None) -> httpx.Client:
        tok = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

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
        """`openeas create SPEC --wait --json`."""
        path = tmp / f"{spec['metadata']['name']}.json"
        path.write_text(json.dumps(spec))
        return self.cli_json("create", str(path), "--wait", timeout=timeout)

    def wait_for(self, check: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
        return wait_for(check, timeout, what)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return terminate(self.proc, sig)


def _popen(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def start_server(
    data_dir: Path, *extra: str, timeout: float = 60, spawn: Spawn = _popen, log_path: Path | None = None
) -> Server:
    """`openeas server` on port 0 everywhere (plus `extra` flags); returns once it is ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = clean_env(data_dir)
    log_path = log_path or data_dir.parent / f"{data_dir.name}-server-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", "openeas", "server", "--data-dir", str(data_dir), "--api-port", "0",
            "--gateway-port", "0", "--vpc-port", "0", "--grace", "3", *extra]  # fmt: skip
    proc = spawn(argv, log_path, env)
    wait_log_line(proc, log_path, SERVER_READY, timeout, "openeas server")
    info = json.loads((data_dir / "server.json").read_text())
    return Server(
        data_dir, proc, log_path, info["api"], info["gateway"]["internet"], info["gateway"]["vpc"], env
    )


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


# -- gateway and upstream processes ------------------------------------------------------------


@dataclass
class Upstream:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_upstream(name: str) -> Upstream:
    """tests/gateway/upstream_app.py on a port of its own choosing (its ready line names it)."""
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM_APP), "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    line = read_line(proc, 10, f"upstream {name}")
    return Upstream(name, int(line.rsplit(" ", 1)[1]), proc)


@dataclass
class GatewayProc:
    proc: subprocess.Popen[bytes]
    ready_line: str
    ports: dict[str, int] = field(default_factory=dict)
    stderr_path: Path | None = None
    metrics: list[str] = field(default_factory=list)  # host:port of each process's metrics listener

    @property
    def internet(self) -> str:
        return f"http://127.0.0.1:{self.ports['internet']}"

    @property
    def intranet(self) -> str:
        return f"http://127.0.0.1:{self.ports['intranet']}"

    def terminate(self, timeout: float = 15) -> int:
        return terminate(self.proc, timeout=timeout)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""


def start_gateway(
    store_url: str,
    name: str,
    workdir: Path,
    *extra: str,
    timeout: float = 20,
    preexec: Callable[[], None] | None = None,  # runs in the child before exec (e.g. a lower rlimit)
) -> GatewayProc:
    """`python -m openeas.gateway` serving gateway record `name` of the store at `store_url`."""
    stderr_path = workdir / f"gateway-{name}-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openeas.gateway", "--store-url", store_url, "--name", name, *extra],
            stdout=subprocess.PIPE,
            stderr=err,
            preexec_fn=preexec,
        )
    try:
        line = read_line(proc, timeout, "the gateway")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stderr_path.read_text(errors='replace')}") from None
    ports, metrics = parse_gateway_ready_line(line)
    return GatewayProc(proc, line, ports, stderr_path, metrics)


def parse_gateway_ready_line(line: str) -> tuple[dict[str, int], list[str]]:
    """`... ready internet=H:P intranet=H:P metrics=H:P,H:P` -> ({kind: port}, [metrics host:port])."""
    ports: dict[str, int] = {}
    metrics: list[str] = []
    for part in line.split()[3:]:
        kind, _, hostport = part.partition("=")
        if kind == "metrics":
            metrics = hostport.split(",")
            continue
        ports[kind] = int(hostport.rsplit(":", 1)[1])
    return ports, metrics


def start_processor(
    module: str,
    model_path: str | Path,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`python -m <module> --model-path M --port 0 ...`: (process, port from its ready line, log)."""
    log_path = tmp / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", module, "--model-path", str(model_path), "--port", "0", *extra]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    line = wait_log_line(proc, log_path, "openeas processor ", timeout, f"processor {module}")
    return proc, _port(line.split()[-1]), log_path


# -- specs the tests deploy --------------------------------------------------------------------

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


def app_spec(tmp: Path, name: str, instance: int = 1, **container: Any) -> dict[str, Any]:
    """A service running APP (written to `tmp`), probed on /health."""
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


def service_spec(name: str, command: str, **metadata: Any) -> dict[str, Any]:
    """A custom-container service spec running `command` (which must listen on $PORT)."""
    meta: dict[str, Any] = {"name": name, "instance": 1}
    meta.update(metadata)
    return {
        "metadata": meta,
        "containers": [{"command": command, "port": 8000, "health_check": {"http_get": {"path": "/health"}}}],
    }


def app_command(module_file: str) -> str:
    """The command running tests/e2e/apps/<module_file> with this interpreter."""
    return f"{shlex.quote(sys.executable)} {E2E_APPS / module_file}"


def demo_spec() -> dict[str, Any]:
    """The demo service's spec file as shipped (`python3` found on the instance's PATH)."""
    spec: dict[str, Any] = json.loads(
        (REPO / "src" / "openeas" / "examples" / "chat_service" / "spec.json").read_text()
    )
    return spec
