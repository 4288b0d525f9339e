"""The gateway as a process and as an object: start-up errors, SIGTERM, workers, store outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from openeas.gateway import Gateway
from openeas.gateway.snapshot import build_snapshot, gateway_settings
from openeas.gateway.watcher import SnapshotWatcher
from openeas.store import Registry, sqlite_url
from openeas.store.records import Changes
from tests.gateway.harness import (
    Upstream,
    add_service,
    make_registry,
    read_responses,
    start_gateway,
    start_upstream,
)

TOKEN = "tok-Proc-0123456789abcdefghij"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = start_upstream("p")
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture()
def store(tmp_path: Path, upstream: Upstream) -> Iterator[tuple[Registry, str, Path]]:
    registry = make_registry(tmp_path / "data")
    registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}})
    add_service(registry, "svc", TOKEN, [upstream.port])
    try:
        yield registry, sqlite_url(tmp_path / "data"), tmp_path
    finally:
        registry.close()


def _run(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openeas.gateway", *args], capture_output=True, text=True, timeout=timeout
    )


def test_port_taken_fails_fast_with_exit_2(store: tuple[Registry, str, Path]) -> None:
    registry, url, _ = store
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        registry.put_gateway("busy", {"listen": {"internet": f"127.0.0.1:{port}"}})
        started = time.monotonic()
        result = _run(["--store-url", url, "--name", "busy"])
        assert result.returncode == 2, result
        assert f"127.0.0.1:{port}" in result.stderr and "internet" in result.stderr
        assert "ready" not in result.stdout
        assert time.monotonic() - started < 10
        result = _run(["--store-url", url, "--name", "busy", "--workers", "2"])
        assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr, result


def test_unknown_gateway_and_bad_store_exit_2(store: tuple[Registry, str, Path], tmp_path: Path) -> None:
    _, url, _ = store
    result = _run(["--store-url", url, "--name", "nope"])
    assert result.returncode == 2 and "nope" in result.stderr
    result = _run(["--store-url", f"sqlite:///{tmp_path}/missing/dir/x.db", "--name", "shared"])
    assert result.returncode == 2 and "store" in result.stderr


def test_bad_record_or_certificate_exit_2(store: tuple[Registry, str, Path], tmp_path: Path) -> None:
    registry, url, _ = store
    registry.put_gateway(
        "badacl", {"listen": {"internet": "127.0.0.1:0"}, "internet_acl": [{"entry": "1.2.3"}]}
    )
    result = _run(["--store-url", url, "--name", "badacl"])
    assert result.returncode == 2 and "internet_acl" in result.stderr and "CIDR" in result.stderr, result
    missing = tmp_path / "missing.pem"
    registry.put_gateway(
        "badtls", {"listen": {"internet": "127.0.0.1:0"}, "tls": {"cert": str(missing), "key": str(missing)}}
    )
    for extra in ([], ["--workers", "2"]):
        result = _run(["--store-url", url, "--name", "badtls", *extra])
        assert result.returncode == 2 and "TLS certificate" in result.stderr and str(missing) in result.stderr
        assert "ready" not in result.stdout


def test_sigterm_lets_requests_in_flight_finish(store: tuple[Registry, str, Path]) -> None:
    _, url, work = store
    gw = start_gateway(url, "shared", work)
    endpoint = gw.internet + "/api/predict/svc/sleep?ms=1200"
    result: dict[str, Any] = {}

    def call() -> None:
        resp = requests.get(endpoint, headers={"Authorization": TOKEN}, timeout=10)
        result["status"] = resp.status_code
        result["body"] = resp.json()

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.4)
    started = time.monotonic()
    gw.proc.send_signal(15)
    time.sleep(0.2)
    # no new connections are accepted while draining
    with pytest.raises(requests.ConnectionError):
        requests.get(gw.internet + "/api/predict/svc/echo", headers={"Authorization": TOKEN}, timeout=2)
    rc = gw.proc.wait(timeout=15)
    t.join()
    assert rc == 0, gw.stderr_text()
    assert result["status"] == 200 and result["body"]["slept_ms"] == 1200
    assert 0.5 < time.monotonic() - started < 5


def test_workers_share_the_ports(store: tuple[Registry, str, Path]) -> None:
    _, url, work = store
    gw = start_gateway(url, "shared", work, "--workers", "2")
    try:
        with requests.Session() as s:
            for base in (gw.internet, gw.intranet):
                for _ in range(5):
                    resp = requests.get(
                        base + "/api/predict/svc/echo", headers={"Authorization": TOKEN}, timeout=5
                    )
                    assert resp.status_code == 200
                assert s.get(base + "/api/predict/nope", timeout=5).status_code == 404
    finally:
        assert gw.terminate() == 0, gw.stderr_text()


def test_slow_client_does_not_balloon_gateway_memory(store: tuple[Registry, str, Path]) -> None:
    _, url, work = store
    gw = start_gateway(url, "shared", work)
    try:
        rss_before = _rss_kib(gw.proc.pid)
        size = 64 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", gw.ports["internet"]), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(
                b"GET /api/predict/svc/bytes?n=%d HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
                % (size, TOKEN.encode())
            )
            time.sleep(1.5)  # read nothing: the gateway must stop reading from the instance
            grown = _rss_kib(gw.proc.pid) - rss_before
            assert grown < 16 * 1024, f"gateway RSS grew by {grown} KiB while the client did not read"
            got = 0
            while got < size:
                chunk = sock.recv(1 << 20)
                assert chunk
                got += len(chunk)
            assert got >= size  # head + every byte arrived once the client read
    finally:
        assert gw.terminate() == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def in_process(registry: Registry, **options: Any) -> Iterator[tuple[Gateway, asyncio.AbstractEventLoop]]:
    """A Gateway served by an event loop in a thread of the test process."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    settings = gateway_settings(registry.get_gateway("shared"))
    gateway = Gateway(settings, build_snapshot(registry, "shared"), **options)
    try:
        asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(10)
        yield gateway, loop
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(1.0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_idle_client_connections_are_closed(store: tuple[Registry, str, Path]) -> None:
    """In-process gateway with a short idle cut-off: an idle keep-alive connection is closed."""
    registry, _, _ = store
    with in_process(registry, idle_timeout_s=0.5) as (gateway, _):
        port = gateway.bound[0].port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"GET /api/predict/svc/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode()
            )
            ((head, _),) = read_responses(sock, 1)
            assert head.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(65536) == b""  # closed by the gateway
            assert 0.4 < time.monotonic() - started < 3
        # a request head that never completes is cut by bounds.head_timeout_s, not the idle
        # timeout (408, then close): tests/gateway/test_bounds.py::test_slow_head_gets_408_and_close


class _FlakyRegistry(Registry):
    """A real SQLite registry whose reads can be made to fail, as if the store went away."""

    down = False

    def version(self) -> int:
        if self.down:
            raise ConnectionError("store unreachable")
        return super().version()

    def changes_since(self, since: int) -> Changes:  # what the watcher reads first
        if self.down:
            raise ConnectionError("store unreachable")
        return super().changes_since(since)


def test_in_process_gateway_keeps_serving_when_the_store_is_down(
    store: tuple[Registry, str, Path], upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    registry, url, _ = store
    flaky = _FlakyRegistry(url)
    with in_process(flaky) as (gateway, loop):
        watcher = SnapshotWatcher(
            flaky, "shared", gateway.set_snapshot, loop, snapshot=gateway.snapshot
        )
        base = f"http://127.0.0.1:{gateway.bound[0].port}/api/predict"
        auth = {"Authorization": TOKEN}
        assert requests.get(base + "/svc/echo", headers=auth, timeout=5).status_code == 200
        flaky.down = True
        with caplog.at_level(logging.WARNING, logger="openeas.gateway"):
            assert not watcher.poll_once()
            assert not watcher.poll_once()
        warnings = [r for r in caplog.records if "last routing snapshot" in r.getMessage()]
        assert len(warnings) == 1  # one warning per outage, not one per poll
        assert requests.get(base + "/svc/echo", headers=auth, timeout=5).status_code == 200
        # the store comes back with a new service: it is picked up
        add_service(registry, "svc2", TOKEN, [upstream.port])
        flaky.down = False
        assert watcher.poll_once()
        deadline = time.monotonic() + 2
        while requests.get(base + "/svc2/echo", headers=auth, timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    flaky.close()


def _low_open_files_limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_gateway_raises_its_open_files_limit_to_the_hard_limit(store: tuple[Registry, str, Path]) -> None:
    """Started with a soft limit of 256 (a shell's `ulimit -Sn 256`), the gateway serves with the
    hard limit: two descriptors per request in flight would otherwise cap it at ~128."""
    _, url, work = store
    gw = start_gateway(url, "shared", work, "--workers", "2", preexec=_low_open_files_limit)
    try:
        hard = Path("/proc/self/limits").read_text()  # this process's hard limit is the child's too
        want = next(line.split()[4] for line in hard.splitlines() if line.startswith("Max open files"))
        pids = [gw.proc.pid] + [
            int(p) for p in Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
        ]
        assert len(pids) == 3  # the parent and its two workers
        for pid in pids:
            limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
            soft = next(line.split()[3] for line in limits if line.startswith("Max open files"))
            assert soft == want, (pid, soft, want)
        resp = requests.get(
            gw.internet + "/api/predict/svc/echo", headers={"Authorization": TOKEN}, timeout=5
        )
        assert resp.status_code == 200
    finally:
        assert gw.terminate() == 0, gw.stderr_text()


def test_store_url_stays_off_the_command_line(store: tuple[Registry, str, Path], tmp_path: Path) -> None:
    """The control plane's supervisor hands the store URL (a PostgreSQL one holds a password) to the
    gateway process in $OPENEAS_STORE_URL: the process serves, and its command line (what `ps`
    shows every local user) does not hold the URL. Without the variable or --store-url: exit 2."""
    from openeas.control.gateways import GatewaySupervisor  # the control plane's own supervisor

    _, url, _ = store
    result = _run(["--name", "shared"])
    assert result.returncode == 2 and "OPENEAS_STORE_URL" in result.stderr, result

    async def scenario() -> tuple[bytes, bytes]:
        sup = GatewaySupervisor("shared", url, tmp_path / "logs")
        task = asyncio.create_task(sup.run())
        try:
            deadline = time.monotonic() + 20
            while not sup.ready.is_set():
                assert time.monotonic() < deadline, "the gateway did not get ready"
                await asyncio.sleep(0.05)
            pid = sup.pid
            assert pid is not None
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            return cmdline, environ
        finally:
            await sup.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    cmdline, environ = asyncio.run(scenario())
    assert b"openeas.gateway" in cmdline
    assert url.encode() not in cmdline, cmdline
    assert b"OPENEAS_STORE_URL=" + url.encode() in environ
