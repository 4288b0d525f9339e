"""WebSocket pass-through (tunnel.py): a real `websockets` echo server behind a real gateway process.

Measured: the upgrade answers 101 with the instance's Sec-WebSocket-Accept; text and binary
messages (one of 2 MiB, so flow control is crossed) go both ways, including one the server sends
unprompted; closing from either side closes the other; a wrong token gets 401 and no upgrade;
every session reaches the instance on a new TCP connection (tunnel connections are never pooled);
the access log records each upgrade once, with status 101; an `Upgrade: h2c` request is forwarded
as plain HTTP (no 101); a tunnel with no traffic for the gateway's idle timeout is closed (both
sides) while one with traffic stays open past it, and stopping the gateway closes open tunnels.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

from openeas.gateway.snapshot import RoutingSnapshot
from openeas.store import sqlite_url
from tests.gateway.harness import GatewayProc, add_service, make_registry, start_gateway
from tests.gateway.inprocess import route, running_gateway

TOKEN = "tok-Sock-0123456789abcdefghij"


@dataclass
class EchoServer:
    """Echoes every message; says hello first; closes when sent "bye"; records its peers."""

    server: Server
    peers: list[int] = field(default_factory=list)  # the gateway-side port of each connection
    ended: list[int] = field(default_factory=list)  # connections whose handler returned

    @property
    def port(self) -> int:
        return int(self.server.socket.getsockname()[1])

    def handle(self, ws: ServerConnection) -> None:
        port = ws.remote_address[1]
        self.peers.append(port)
        try:
            ws.send("hello " + ws.request.path if ws.request is not None else "hello")
            for message in ws:
                if message == "bye":
                    ws.close()
                    break
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.ended.append(port)


@dataclass
class WsStack:
    gateway: GatewayProc
    echo: EchoServer
    access_log: Path

    def url(self, sub: str = "") -> str:
        return self.gateway.internet.replace("http://", "ws://") + "/api/predict/sock" + sub


@pytest.fixture(scope="module")
def ws_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsStack]:
    data_dir = tmp_path_factory.mktemp("ws")
    holder: list[EchoServer] = []
    server = serve(lambda ws: holder[0].handle(ws), "127.0.0.1", 0, max_size=4 * 1024 * 1024)
    echo = EchoServer(server)
    holder.append(echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry = make_registry(data_dir)
    registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}})
    add_service(registry, "sock", TOKEN, [echo.port], keepalive_ms=2000)
    access_log = data_dir / "access.log"
    gateway = start_gateway(sqlite_url(data_dir), "shared", data_dir, "--access-log", str(access_log))
    try:
        yield WsStack(gateway, echo, access_log)
    finally:
        rc = gateway.terminate()
        server.shutdown()
        thread.join(10)
        registry.close()
        assert rc == 0, gateway.stderr_text()
        stderr = gateway.stderr_text()
        for bad in ("Traceback", "error while handling", TOKEN):
            assert bad not in stderr, stderr


def wait_for(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.05)
    return False


def test_websocket_through_the_gateway(ws_stack: WsStack) -> None:
    echo = ws_stack.echo
    before = len(echo.peers)
    big = bytes(range(256)) * (8 * 1024)  # 2 MiB: more than a socket buffer, both ways
    # the session is longer than the service's keepalive (2 s): a tunnel is not a request
    with connect(
        ws_stack.url("/room?x=1"), additional_headers={"Authorization": TOKEN}, max_size=4 * 1024 * 1024
    ) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        assert ws.response.headers["X-Request-Id"]
        assert ws.recv(timeout=10) == "hello /room?x=1"
        for i in range(5):
            ws.send(f"m{i}")
        assert [ws.recv(timeout=10) for _ in range(5)] == [f"m{i}" for i in range(5)]
        time.sleep(2.5)
        ws.send(big)
        assert ws.recv(timeout=20) == big
        ws.send("after")
        assert ws.recv(timeout=10) == "after"
    # the client closed: the gateway closes the instance side too
    assert wait_for(lambda: len(echo.ended) == before + 1), (echo.peers, echo.ended)
    # the server closes: the client sees the close
    with connect(ws_stack.url(), additional_headers={"Authorization": TOKEN}) as ws:
        assert ws.recv(timeout=10) == "hello /"
        ws.send("bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert wait_for(lambda: len(echo.ended) == before + 2)
    # each session had its own instance connection (none came from, or went back to, the pool)
    assert len(echo.peers) == before + 2 and len(set(echo.peers[before:])) == 2
    # counted once per upgrade, with status 101
    assert wait_for(lambda: _logged(ws_stack.access_log, 101) >= before + 2, timeout=5)
    assert _logged(ws_stack.access_log, 101) == before + 2


def test_wrong_token_is_refused_without_upgrade(ws_stack: WsStack) -> None:
    before = len(ws_stack.echo.peers)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_stack.url(), additional_headers={"Authorization": "tok-wrong"}, open_timeout=10)
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as missing:
        connect(ws_stack.url(), open_timeout=10)
    assert missing.value.response.status_code == 401
    assert len(ws_stack.echo.peers) == before  # the instance never saw them


def test_h2c_upgrade_is_forwarded_as_plain_http(ws_stack: WsStack) -> None:
    """Only `websocket` is tunnelled: an h2c upgrade reaches the instance as a plain GET (without
    `Upgrade`), and the websockets server answers that with its 426, not a 101."""
    host, port = ws_stack.gateway.internet.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET /api/predict/sock HTTP/1.1\r\nHost: x\r\nAuthorization: " + TOKEN.encode() + b"\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        head = sock.recv(65536).split(b"\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 426"), head


def test_idle_tunnel_is_closed_and_busy_one_is_not(ws_stack: WsStack) -> None:
    """In-process gateway with a 2 s idle timeout (the sweep runs once a second)."""
    echo = ws_stack.echo
    snap = RoutingSnapshot(1, {"sock": route("sock", TOKEN, [echo.port])})
    after_stop = ExitStack()  # a session still open when the gateway stops
    with running_gateway(snap) as gw:
        gw.call(lambda g: setattr(g, "idle_timeout_s", 2.0))
        url = gw.url("sock").replace("http://", "ws://")
        headers = {"Authorization": TOKEN}
        start = len(echo.ended)
        with connect(url, additional_headers=headers, ping_interval=None) as busy:
            assert busy.recv(timeout=10) == "hello /"
            for i in range(12):  # 3.6 s of a message every 0.3 s: never idle for 2 s
                busy.send(f"b{i}")
                assert busy.recv(timeout=10) == f"b{i}"
                time.sleep(0.3)
        # the busy session's end reaches the instance asynchronously: count it before the idle one
        assert wait_for(lambda: len(echo.ended) == start + 1)
        before = start + 1
        with connect(url, additional_headers=headers, ping_interval=None) as idle:
            assert idle.recv(timeout=10) == "hello /"
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed):
                idle.recv(timeout=15)  # nothing sent: the gateway cuts it after 2-3 s
            assert time.monotonic() - t0 < 10
        assert wait_for(lambda: len(echo.ended) == before + 1)  # the instance side too
        # stopping the gateway closes an open tunnel
        opened = after_stop.enter_context(connect(url, additional_headers=headers, ping_interval=None))
        assert opened.recv(timeout=10) == "hello /"
    with after_stop, pytest.raises(ConnectionClosed):
        opened.recv(timeout=10)


def _logged(path: Path, status: int) -> int:
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(1 for line in lines if line["status"] == status and line["service"] == "sock")
