"""The gateway keeps serving its last routing snapshot through a store that is locked, missing
or corrupt, says so in its log and on /metrics, and follows the store again when it is back.

One real gateway process per store kind, one real upstream. Each outage: break the store, see
`openeas_gateway_store_up 0` and the failure counter move, call the service through the gateway
(200 every time), repair the store, see `store_up 1` and the recovery line, then add a service
to the store and see the gateway route it (it really reads the store again).

- SQLite (WAL): locked: another process holds SQLite's WAL lock bytes of `registry.db-shm`
  exclusively (what an exclusive-mode connection or a recovery holds; readers get "locking
  protocol" after SQLite's retries); missing: the file is renamed away; corrupt: its bytes are
  overwritten with garbage in place (an open connection would go on reading its cache: the
  gateway checks the file's header before each read).
- PostgreSQL: locked: another session holds `LOCK TABLE meta IN ACCESS EXCLUSIVE MODE` (the
  gateway's reads give up after its 5 s lock_timeout); missing: the server is stopped, then
  started again.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import requests

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import add_service, make_registry
from tests.harness import GatewayProc, Upstream, start_gateway, start_upstream, wait_for
from tests.store.postgres_cluster import PostgresServer, postgres_server

TOKEN = "tok-Outage-0123456789abcdefgh"


def metric(gw: GatewayProc, name: str) -> float:
    text = requests.get(f"http://{gw.metrics[0]}/metrics", timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"{name} is not in /metrics:\n{text}"
    return float(found.group(1))


def serves(gw: GatewayProc, service: str) -> bool:
    url = f"{gw.internet}/api/predict/{service}/health"
    resp = requests.get(url, headers={"Authorization": TOKEN}, timeout=10)
    return resp.status_code == 200


def outage(gw: GatewayProc, registry: Registry, upstream: Upstream, name: str, break_it: Callable[[], None],
           repair: Callable[[], None]) -> None:  # fmt: skip
    """One outage: break, serve through it, repair, follow the store again."""
    failures = metric(gw, "openeas_gateway_store_failures_total")
    outages = metric(gw, "openeas_gateway_store_outages_total")
    break_it()
    wait_for(lambda: metric(gw, "openeas_gateway_store_up") == 0, 40, f"the gateway to see the store {name}")
    assert metric(gw, "openeas_gateway_store_failures_total") > failures
    assert metric(gw, "openeas_gateway_store_outages_total") == outages + 1
    for _ in range(20):
        assert serves(gw, "echo"), f"a call failed while the store was {name}"
    store = requests.get(f"http://{gw.metrics[0]}/stats", timeout=10).json()["store"]
    assert store["up"] == 0 and store["outages"] == outages + 1, store
    assert "cannot read the store (" in gw.stderr_text()
    repair()
    back = f"the gateway to see the store back ({name})"
    wait_for(lambda: metric(gw, "openeas_gateway_store_up") == 1, 40, back)
    recovered = gw.stderr_text().count("the store is readable again")
    assert recovered == outages + 1, gw.stderr_text()
    add_service(registry, f"after_{name}", TOKEN, [upstream.port])
    wait_for(lambda: serves(gw, f"after_{name}"), 20, f"the gateway to route a service added after ({name})")


@contextlib.contextmanager
def running_gateway(url: str, registry: Registry, tmp: Path) -> Iterator[tuple[GatewayProc, Upstream]]:
    upstream = start_upstream("outage")
    registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}})
    add_service(registry, "echo", TOKEN, [upstream.port])
    gw = start_gateway(url, "shared", tmp)
    try:
        assert serves(gw, "echo")
        assert metric(gw, "openeas_gateway_store_up") == 1
        yield gw, upstream
    finally:
        code = gw.terminate()
        upstream.stop()
        registry.close()
        assert code == 0, gw.stderr_text()
        assert "Traceback" not in gw.stderr_text(), gw.stderr_text()
        assert TOKEN not in gw.stderr_text()


LOCKER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 8, 120)  # SQLite's WAL lock bytes: writer, checkpointer, readers
print('locked', flush=True)
sys.stdin.read()
"""


def test_sqlite_store_locked_missing_corrupt(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    path = Path(sqlite_url(tmp_path).split(":///", 1)[1])
    with running_gateway(sqlite_url(tmp_path), registry, tmp_path) as (gw, upstream):
        lockers: list[subprocess.Popen[str]] = []

        def lock() -> None:
            proc = subprocess.Popen([sys.executable, "-c", LOCKER, f"{path}-shm"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            lockers.append(proc)

        def unlock() -> None:
            proc = lockers.pop()
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)

        outage(gw, registry, upstream, "locked", lock, unlock)

        away = path.with_name("registry.db.away")
        outage(gw, registry, upstream, "missing", lambda: path.rename(away), lambda: away.rename(path))

        registry.engine.dispose()  # so nothing of ours writes while the bytes are garbage
        with registry.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        registry.engine.dispose()
        good = path.read_bytes()

        def garble() -> None:
            with open(path, "r+b") as f:
                f.write(os.urandom(len(good)))

        def restore() -> None:
            with open(path, "r+b") as f:
                f.write(good)

        outage(gw, registry, upstream, "corrupt", garble, restore)


def test_postgres_store_locked_and_stopped(tmp_path: Path) -> None:
    with postgres_server() as pg:
        registry = Registry(pg.url)
        registry.create_schema()
        with running_gateway(pg.url, registry, tmp_path) as (gw, upstream):
            holder: list[psycopg.Connection[tuple[object, ...]]] = []

            def lock() -> None:
                conn = psycopg.connect(libpq(pg))
                conn.execute("LOCK TABLE meta IN ACCESS EXCLUSIVE MODE")  # held until rollback
                holder.append(conn)

            def unlock() -> None:
                conn = holder.pop()
                conn.rollback()
                conn.close()

            outage(gw, registry, upstream, "locked", lock, unlock)

            def restart() -> None:
                pg.start()
                registry.engine.dispose()  # our own pooled connections died with the server

            outage(gw, registry, upstream, "stopped", pg.stop, restart)


def libpq(pg: PostgresServer) -> str:
    return pg.url.replace("postgresql+psycopg://", "postgresql://", 1)
