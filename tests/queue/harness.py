"""Real processes for the queue tests: a registry, Redis, worker instances, `python -m openeas.queue`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from openeas.store import Registry
from tests.gateway.harness import add_instance, make_registry
from tests.harness import read_line, terminate

HERE = Path(__file__).resolve().parent
WORKER_APP = HERE / "worker_app.py"
SDK_SCRIPT = HERE / "sdk_queue.py"
TOKEN = "queue-test-token-0123456789"


@dataclass
class RedisServer:
    url: str
    proc: subprocess.Popen[bytes]


def start_redis(tmp: Path) -> RedisServer:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is missing: scripts/test.sh installs it (apt-get install redis-server)"
    # a unix socket, no TCP port: nothing to race for
    d = tmp / "redis"
    d.mkdir(parents=True)
    sock = d / "redis.sock"
    argv = [
        exe,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--dir",
        str(d),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(unix_socket_path=str(sock))
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("redis-server did not start") from None
            time.sleep(0.05)
    client.close()
    return RedisServer(f"unix://{sock}?db=0", proc)


@dataclass
class Worker:
    id: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def deliveries(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def most_at_once(self) -> int:
        """The most requests the instance ever had in flight at the same time."""
        path = self.log.with_name(self.log.name + ".max")
        return int(path.read_text()) if path.exists() else 0


@dataclass
class QueueEnv:
    """One Async service: its registry rows, worker instances and queue server."""

    tmp: Path
    registry: Registry
    service: str
    redis_url: str = ""
    workers: list[Worker] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None
    port: int = 0
    admin_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def add_worker(self, delay: float) -> Worker:
        wid = f"{self.service}-{len(self.workers)}"
        log = self.tmp / f"{wid}.log"
        argv = [sys.executable, str(WORKER_APP), "0", str(delay), str(log)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        port = int(read_line(proc, 15, "the worker").split()[-1])
        add_instance(self.registry, self.service, wid, port)
        w = Worker(wid, port, proc, log)
        self.workers.append(w)
        return w

    def start_server(self) -> None:
        args = [
            sys.executable,
            "-m",
            "openeas.queue",
            "--store-url",
            self.registry.url,
            "--service",
            self.service,
        ]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        with open(self.tmp / "queue.log", "ab") as err:
            self.server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err)
        line = json.loads(read_line(self.server, 30, "the queue server"))
        self.port, self.admin_port = line["port"], line["admin_port"]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = requests.get(self.admin + "/_queue/stats", timeout=10).json()
        return out

    def put(self, body: bytes, **tags: str) -> requests.Response:
        return requests.post(self.url, data=body, params=tags, headers={"Authorization": TOKEN}, timeout=10)

    def sink_get(self, **params: str) -> requests.Response:
        return requests.get(self.url + "/sink", params=params, timeout=30)

    def wait_for(self, what: str, check: Any, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last stats: {self.stats()}")

    def close(self) -> None:
        if self.server is not None:
            terminate(self.server, timeout=15)
        for w in self.workers:
            terminate(w.proc, signal.SIGKILL)
        self.registry.close()


def make_env(
    tmp: Path,
    service: str,
    queue: dict[str, Any] | None = None,
    worker_threads: int = 5,
    redis_url: str = "",
    keepalive_ms: int = 30000,
) -> QueueEnv:
    registry = make_registry(tmp / "data")
    spec: dict[str, Any] = {
        "metadata": {
            "name": service,
            "type": "Async",
            "instance": 1,
            "rpc": {"worker_threads": worker_threads, "keepalive": keepalive_ms},
        },
        "containers": [{"command": f"{sys.executable} {WORKER_APP} $PORT 0.2 /dev/null"}],
    }
    if queue is not None:
        spec["queue"] = queue
    registry.create_service(service, spec, TOKEN, "shared")
    return QueueEnv(tmp, registry, service, redis_url)


def run_sdk(eas_python: Path, *args: str, timeout: float = 180) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(eas_python), str(SDK_SCRIPT), *args], capture_output=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, f"SDK script failed: {proc.stderr.decode()[-3000:]}"
    out: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return out
