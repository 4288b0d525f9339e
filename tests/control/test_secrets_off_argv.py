"""No password on the command line of any process openeas starts (docs/security.md).

`openeas server` runs on a PostgreSQL registry and a Redis, both reached by URLs that hold a
password, given to the server in $OPENEAS_STORE_URL / $OPENEAS_REDIS_URL. It starts the shared
gateway (shared limits in Redis), a plain service's instance and an Async service's queue server
(queues in Redis). Every process under the server is read from /proc: no command line holds
either password, and no instance's environment holds them either (an instance runs user code).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server, app_spec, start_server, wait_for
from tests.queue.harness import WORKER_APP
from tests.store.postgres_cluster import postgres_cluster

DB_PASSWORD = "db-pw-Zq81x"
REDIS_PASSWORD = "redis-pw-Kf27y"


@contextlib.contextmanager
def redis_with_password(tmp: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is missing: scripts/test.sh installs it (apt-get install redis-server)"
    sock = tmp / "redis.sock"
    argv = [exe, "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp), "--save", "",
            "--appendonly", "no", "--requirepass", REDIS_PASSWORD]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        url = f"unix://{sock}?db=0&password={REDIS_PASSWORD}"
        wait_for(lambda: redis.Redis.from_url(url).ping(), 15, "redis-server", every=0.1)
        yield url
    finally:
        proc.kill()
        proc.wait()


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (children in other sessions included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("secrets")
    with postgres_cluster() as url, redis_with_password(tmp) as redis_url:
        # trust auth ignores the password, but it travels wherever the URL goes
        store_url = url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)

        def spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
            env = {**env, "OPENEAS_STORE_URL": store_url, "OPENEAS_REDIS_URL": redis_url}
            with open(log_path, "wb") as log:
                return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

        srv = start_server(tmp / "data", spawn=spawn)
        try:
            yield srv
        finally:
            assert srv.stop() == 0, srv.log()


def test_no_password_on_any_command_line(server: Server, tmp_path: Path) -> None:
    server.deploy(app_spec(tmp_path, "plain"), tmp_path)
    queued = {
        "metadata": {"name": "queued", "type": "Async", "instance": 1},
        "containers": [{"command": f"{sys.executable} {WORKER_APP} $PORT 0.1 {tmp_path / 'jobs.log'}",
                        "port": 8000, "health_check": {"http_get": {"path": "/health"}}}],
    }  # fmt: skip
    server.deploy(queued, tmp_path)

    def started() -> list[int] | None:
        pids = descendants(server.pid)
        lines = " ".join(cmdline(p) for p in pids)
        return pids if "openeas.gateway" in lines and "openeas.queue" in lines else None

    pids = wait_for(started, 30, "the gateway and the queue server")
    with server.client() as api:
        views = [api.get(f"/api/v2/services/local/{s}/instances").json() for s in ("plain", "queued")]
    instances = [i for view in views for i in view["instances"]]
    assert len(instances) == 2 and all(i["pid"] in pids for i in instances), (instances, pids)
    seen = {p: cmdline(p) for p in pids}
    for pid, line in seen.items():
        assert DB_PASSWORD not in line and REDIS_PASSWORD not in line, f"pid {pid}: {line}"
    assert any("openeas.queue" in line for line in seen.values())
    # the processes that need the URLs got them in their environment
    for pid, line in seen.items():
        if "openeas.gateway" in line or "openeas.queue" in line:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert DB_PASSWORD.encode() in environ and REDIS_PASSWORD.encode() in environ, line
    # the instances run user code: they get neither URL
    for inst in instances:
        environ = Path(f"/proc/{inst['pid']}/environ").read_bytes()
        assert DB_PASSWORD.encode() not in environ and REDIS_PASSWORD.encode() not in environ
    # the server itself was given them in its environment, not its argv
    assert DB_PASSWORD not in cmdline(server.pid) and REDIS_PASSWORD not in cmdline(server.pid)
