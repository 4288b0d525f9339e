"""One real gateway process, two real upstream instances and a SQLite registry for the module."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    GatewayProc,
    Upstream,
    add_service,
    free_port,
    make_registry,
    start_gateway,
    start_upstream,
)

TOKEN = "tok-Echo-0123456789abcdefghij"
PAIR_TOKEN = "tok-Pair-0123456789abcdefghij"
MiB = 1024 * 1024


@dataclass
class Stack:
    data_dir: Path
    registry: Registry
    store_url: str
    a: Upstream
    b: Upstream
    gateway: GatewayProc
    access_log: Path
    dead_port: int

    @property
    def base(self) -> str:
        return self.gateway.internet

    def url(self, service: str, sub: str = "") -> str:
        return f"{self.gateway.internet}/api/predict/{service}{sub}"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    a, b = start_upstream("a"), start_upstream("b")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]) -> Iterator[Stack]:
    a, b = upstreams
    data_dir = tmp_path_factory.mktemp("gw")
    registry = make_registry(data_dir)
    registry.put_gateway(
        "shared",
        {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}, "max_body_bytes": MiB},
    )
    dead_port = free_port()
    add_service(registry, "echo", TOKEN, [a.port], keepalive_ms=1000)
    add_service(registry, "pair", PAIR_TOKEN, [a.port, b.port])
    add_service(registry, "dead", TOKEN, [dead_port])
    add_service(registry, "waiting", TOKEN, [])
    # a port whose accept queue is full: connecting to it hangs (SYNs are dropped)
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(blackhole.getsockname())
        fillers.append(filler)
    add_service(registry, "blackhole", TOKEN, [blackhole.getsockname()[1]], keepalive_ms=8000)
    add_service(registry, "stopped", TOKEN, [a.port])
    registry.update_service("stopped", desired="stopped")
    registry.set_status("stopped", "Stopped")
    access_log = data_dir / "access.log"
    gateway = start_gateway(sqlite_url(data_dir), "shared", data_dir, "--access-log", str(access_log))
    stack = Stack(data_dir, registry, sqlite_url(data_dir), a, b, gateway, access_log, dead_port)
    try:
        yield stack
    finally:
        rc = gateway.terminate()
        registry.close()
        for sock in [blackhole, *fillers]:
            sock.close()
        assert rc == 0, f"gateway exited {rc} on SIGTERM\n{gateway.stderr_text()}"
        stderr = gateway.stderr_text()
        for bad in ("Traceback", "error while handling", TOKEN, PAIR_TOKEN):
            assert bad not in stderr, stderr
