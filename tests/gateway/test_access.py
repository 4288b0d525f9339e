"""Allow-lists on the TCP peer, trusted proxies, disabled access methods: real gateway processes.

Loopback is 127.0.0.0/8, so connecting from 127.0.0.2 or 127.0.0.3 gives the gateway other peer
addresses on one machine.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    GatewayProc,
    Upstream,
    add_service,
    connect_from,
    free_port,
    make_registry,
    read_responses,
    session_from,
    start_gateway,
)

TOKEN = "tok-Acl-0123456789abcdefghijk"
AUTH = {"Authorization": TOKEN}
GATEWAY_SPEC: dict[str, Any] = {
    "listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"},
    "enable_internet": True,
    "enable_intranet": True,
    "internet_acl": [{"entry": "127.0.0.1/32"}, {"entry": "10.0.0.0/8"}],
    "intranet_acl": [],
    "trusted_proxies": [{"entry": "127.0.0.3/32"}],
}


@pytest.fixture(scope="module")
def acl_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]
) -> Iterator[tuple[GatewayProc, Registry]]:
    a, _ = upstreams
    data_dir = tmp_path_factory.mktemp("acl")
    registry = make_registry(data_dir)
    registry.put_gateway("acl", GATEWAY_SPEC)
    add_service(registry, "echo", TOKEN, [a.port], gateway="acl")
    gateway = start_gateway(sqlite_url(data_dir), "acl", data_dir)
    try:
        yield gateway, registry
    finally:
        rc = gateway.terminate()
        registry.close()
        assert rc == 0, gateway.stderr_text()
        assert "Traceback" not in gateway.stderr_text()


def _get(source: str, base: str, headers: dict[str, str] | None = None) -> requests.Response:
    with session_from(source) as s:
        return s.get(base + "/api/predict/echo/echo", headers={**AUTH, **(headers or {})}, timeout=5)


def _raw_get(sock: socket.socket, xff: bytes | None = None) -> tuple[bytes, bytes]:
    extra = b"X-Forwarded-For: %s\r\n" % xff if xff is not None else b""
    sock.sendall(
        b"GET /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n%s\r\n"
        % (TOKEN.encode(), extra)
    )
    ((head, body),) = read_responses(sock, 1)
    return head, body


def test_internet_acl_on_the_tcp_peer(acl_gateway: tuple[GatewayProc, Registry]) -> None:
    gw, _ = acl_gateway
    assert _get("127.0.0.1", gw.internet).status_code == 200
    resp = _get("127.0.0.2", gw.internet)
    assert resp.status_code == 403, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert body["code"] == 403 and body["reason"] == "Forbidden" and body["request_id"]
    for word in ("127.0.0.2", "allow-list", "internet_acl", "127.0.0.2/32", "'acl'"):
        assert word in body["message"], body
    # the refused connection is closed after the answer
    with connect_from("127.0.0.2", gw.ports["internet"]) as sock:
        head, _ = _raw_get(sock)
        assert head.startswith(b"HTTP/1.1 403") and b"Connection: close" in head
        assert sock.recv(100) == b""
    # an empty intranet list lets any caller in
    assert _get("127.0.0.2", gw.intranet).status_code == 200


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(acl_gateway: tuple[GatewayProc, Registry]) -> None:
    gw, _ = acl_gateway
    assert _get("127.0.0.2", gw.internet, {"X-Forwarded-For": "10.1.2.3"}).status_code == 403
    resp = _get("127.0.0.1", gw.internet, {"X-Forwarded-For": "203.0.113.9"})
    assert resp.status_code == 200  # the peer is allowed; what it claims does not matter
    assert resp.json()["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


def test_trusted_proxy_passes_the_client_address(acl_gateway: tuple[GatewayProc, Registry]) -> None:
    gw, _ = acl_gateway
    with connect_from("127.0.0.3", gw.ports["internet"]) as sock:
        head, body = _raw_get(sock, b"10.1.2.3")
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["headers"]["x-forwarded-for"] == "10.1.2.3, 127.0.0.3"
        head, body = _raw_get(sock, b"198.51.100.7")
        assert head.startswith(b"HTTP/1.1 403") and b"Connection: close" not in head
        assert "198.51.100.7" in json.loads(body)["message"]
        # the right-most address the trusted proxy saw decides, not what its client claimed
        head, _ = _raw_get(sock, b"10.1.2.3, 198.51.100.7")
        assert head.startswith(b"HTTP/1.1 403")
        head, _ = _raw_get(sock, b"198.51.100.7, 10.1.2.3")
        assert head.startswith(b"HTTP/1.1 200")
        head, _ = _raw_get(sock)  # no X-Forwarded-For: the proxy itself is the caller (not listed)
        assert head.startswith(b"HTTP/1.1 403")
        head, _ = _raw_get(sock, b"10.9.9.9")  # the connection stayed usable for other clients
        assert head.startswith(b"HTTP/1.1 200")


def test_acl_change_applies_without_restart(acl_gateway: tuple[GatewayProc, Registry]) -> None:
    gw, registry = acl_gateway
    idle = connect_from("127.0.0.1", gw.ports["internet"])
    try:
        head, _ = _raw_get(idle)
        assert head.startswith(b"HTTP/1.1 200")
        registry.put_gateway("acl", {**GATEWAY_SPEC, "internet_acl": [{"entry": "127.0.0.2/32"}]})
        deadline = time.monotonic() + 3
        while _get("127.0.0.2", gw.internet).status_code != 200:
            assert time.monotonic() < deadline, "the new allow-list was not applied"
            time.sleep(0.05)
        assert _get("127.0.0.1", gw.internet).status_code == 403
        idle.settimeout(2)
        assert idle.recv(100) == b""  # an idle connection of a caller no longer allowed is closed
    finally:
        idle.close()
        registry.put_gateway("acl", GATEWAY_SPEC)
    deadline = time.monotonic() + 3
    while _get("127.0.0.1", gw.internet).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_disabled_access_method_has_no_listener(tmp_path: Path, upstreams: tuple[Upstream, Upstream]) -> None:
    registry = make_registry(tmp_path / "data")
    port = free_port()
    registry.put_gateway(
        "vpconly",
        {
            "listen": {"internet": f"127.0.0.1:{port}", "intranet": "127.0.0.1:0"},
            "enable_internet": False,
            "enable_intranet": True,
        },
    )
    add_service(registry, "echo", TOKEN, [upstreams[0].port], gateway="vpconly")
    gw = start_gateway(sqlite_url(tmp_path / "data"), "vpconly", tmp_path)
    try:
        assert "internet=" not in gw.ready_line and "intranet=" in gw.ready_line
        assert _get("127.0.0.1", gw.intranet).status_code == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        assert gw.terminate() == 0
        registry.close()
