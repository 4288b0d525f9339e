"""An `openeas server` started for the bench, driven through its CLI, API and registry."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import start_server

from bench.procs import ProcessSet, cmdline, descendants


class BenchError(RuntimeError):
    pass


@dataclass
class Cluster:
    data_dir: Path
    api_port: int
    gateway_port: int
    vpc_port: int
    pid: int
    env: dict[str, str]
    log_path: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin_token").read_text().strip()

    @property
    def store_url(self) -> str:
        from openeas.store import sqlite_url

        return sqlite_url(self.data_dir)

    def api_get(self, path: str, timeout: float = 10.0) -> Any:
        req = urllib.request.Request(self.api + path, headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "openeas", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def create(self, spec: dict[str, Any], spec_dir: Path, timeout: float = 180.0) -> dict[str, Any]:
        """`openeas create SPEC.json --wait --json`; returns {"name","status","token","endpoints"}."""
        path = spec_dir / f"{spec['metadata']['name']}.json"
        path.write_text(json.dumps(spec, indent=2))
        result = self.cli("create", str(path), "--wait", "--json", timeout=timeout)
        if result.returncode != 0:
            raise BenchError(
                f"openeas create {path.name} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        created: dict[str, Any] = json.loads(result.stdout)
        return created

    def instances(self, service: str) -> list[dict[str, Any]]:
        data = self.api_get(f"/api/v2/services/local/{service}/instances")
        if isinstance(data, dict):
            for key in ("instances", "items", "Instances"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    def ready_port(self, service: str, timeout: float = 60.0) -> int:
        """The port of a ready instance of `service`, read from the instances API (bounded wait)."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.instances(service)
            for inst in last:
                state = str(inst.get("state", inst.get("status", ""))).lower()
                port = inst.get("port")
                if port and state in ("ready", "running", "healthy"):
                    return int(port)
            time.sleep(0.2)
        raise BenchError(f"no ready instance of {service}: {last}")

    def gateway_pids(self) -> list[int]:
        """The gateway processes under this server (`python -m openeas.gateway ...`)."""
        return [p for p in descendants(self.pid) if "openeas.gateway" in cmdline(p)]

    def gateway_pid(self) -> int:
        pids = self.gateway_pids()
        if not pids:
            raise BenchError("no openeas.gateway process under the server")
        # With several (a supervisor and its workers) the first found is the top one.
        return pids[0]


def start_cluster(procs: ProcessSet, work: Path, timeout: float = 90.0) -> Cluster:
    """`openeas server` on port 0 everywhere, started by the shared harness (tests/harness.py)
    into the bench's process set; returns once its ready line is in the log."""

    def spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return procs.spawn("openeas-server", argv, log_path, env=env)

    data_dir = work / "data"
    try:
        srv = start_server(data_dir, timeout=timeout, spawn=spawn, log_path=work / "server.log")
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    return Cluster(data_dir, srv.api_port, srv.gateway_port, srv.vpc_port, srv.pid, srv.env, srv.log_path)


def add_routes(store_url: str, count: int, prefix: str, gateway: str = "shared") -> float:
    """Write `count` service rows (with tokens, no instances) straight into the registry, in one
    transaction that bumps the change feed once, so the gateway's snapshot grows to count+N
    routes. `metadata.instance` is 0, so the reconciler has nothing to start. Returns seconds."""
    from openeas.store import Registry, schema

    registry = Registry(store_url)
    now = time.time()
    rows = []
    for i in range(count):
        name = f"{prefix}{i:05d}"
        spec = {
            "metadata": {"name": name, "instance": 0},
            "containers": [{"command": "sleep 3600", "port": 8000}],
        }
        rows.append(
            {
                "name": name,
                "spec": json.dumps(spec),
                "token": secrets.token_urlsafe(30),
                "gateway": gateway,
                "desired": "running",
                "status": "Running",  # what the reconciler settles on for 0 instances
                "message": "",
                "revision": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
    t0 = time.monotonic()
    try:
        with registry._write() as conn:  # the registry's own write path: bumps meta.version
            conn.execute(schema.services.insert(), rows)
    finally:
        registry.close()
    return time.monotonic() - t0


def remove_routes(store_url: str, prefix: str) -> None:
    from openeas.store import Registry, schema

    registry = Registry(store_url)
    try:
        with registry._write() as conn:
            conn.execute(schema.services.delete().where(schema.services.c.name.like(f"{prefix}%")))
    finally:
        registry.close()
