"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, loopback port, trust auth."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port


def find_pg_bin() -> Path | None:
    # Debian keeps the server tools out of PATH, under /usr/lib/postgresql/<version>/bin.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _as_db_user(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; Debian's package creates the `postgres` user for this.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PostgresServer:
    """A running throwaway cluster that a test may stop and start again (same port, same data)."""

    url: str
    bindir: Path
    data: Path
    port: int
    log: str
    listen: str = "127.0.0.1"  # the address it listens on (and the URL's host)

    def start(self) -> None:
        opts = f"-c listen_addresses={self.listen} -p {self.port} -k {self.data} -c fsync=off"
        subprocess.run(
            _as_db_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", self.log, "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-h", self.listen, "-p", str(self.port)])
            if ready.returncode == 0:
                break
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_db_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )


@contextmanager
def postgres_server(listen: str = "127.0.0.1", trust_from: str | None = None) -> Iterator[PostgresServer]:
    """A cluster listening on `listen`; `trust_from` (a CIDR): clients from there are let in
    too (the cluster tests' other hosts), trusted like loopback."""
    bindir = find_pg_bin()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed; scripts/test.sh installs it (apt-get install postgresql)"
        )
    # Its own temp dir: pytest's are private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="openeas-pg-"))
    data = root / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(
        _as_db_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    if trust_from is not None:
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {trust_from} trust\n")
    url = f"postgresql+psycopg://postgres@{listen}:{port}/postgres"
    server = PostgresServer(url, bindir, data, port, str(root / "log"), listen)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_cluster(listen: str = "127.0.0.1", trust_from: str | None = None) -> Iterator[str]:
    with postgres_server(listen, trust_from) as server:
        yield server.url
