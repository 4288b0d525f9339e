"""Resource bounds (issue 17, item 2): each bound of bounds.ClientBounds, and misbehaving instances.

An in-process gateway (inprocess.py) with small bounds, real sockets from the test: a head that
never completes (408), a silent connection, a body under the minimum rate (408), too many headers
(431), connection limits per client address (127.0.0.2 vs 127.0.0.3) and per listener; instances
that answer garbage, oversized headers, stop mid-body or never answer. After each, a normal call
still works and the metrics name the reason.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests

from openeas.gateway.bounds import (
    BODY_TOO_SLOW,
    HEAD_TIMEOUT,
    REFUSED_CLIENT,
    REFUSED_LISTENER,
    ClientBounds,
    connection_verdict,
)
from openeas.gateway.snapshot import RoutingSnapshot, gateway_settings
from openeas.spec import SpecError
from openeas.store import GatewayRecord
from tests.gateway.inprocess import InProcessGateway, route, running_gateway, settings
from tests.gateway.misbehaving_upstream import start_misbehaving_upstream
from tests.gateway.raw_client import exchange

TOKEN = "bounds-token"
AUTH = {"Authorization": TOKEN}
BOUNDS = ClientBounds(
    head_timeout_s=1.0,
    min_body_rate=1000,
    body_rate_window_s=1.0,
    max_header_count=20,
    max_connections=40,
    max_connections_per_client=10,
    max_response_head_bytes=16 * 1024,
)


@pytest.fixture(scope="module")
def gw() -> Iterator[InProcessGateway]:
    port, sock = start_misbehaving_upstream()
    svc = replace(route("svc", TOKEN, [port]), timeout_s=1.5)
    try:
        with running_gateway(RoutingSnapshot(1, {"svc": svc}), settings(bounds=BOUNDS)) as gateway:
            yield gateway
    finally:
        sock.close()


def _ok(gw: InProcessGateway, source: str = "127.0.0.1") -> None:
    out = exchange(
        gw.port(),
        b"GET /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode(),
        host="127.0.0.1",
    )
    assert out.answers and out.answers[0].status == 200, out.raw[:200]


def _events(gw: InProcessGateway) -> dict[str, int]:
    return dict(gw.call(lambda g: dict(g.connection_events)))


def _stats(gw: InProcessGateway) -> dict[str, object]:
    return json.loads(requests.get(f"http://{gw.metrics_address}/stats", timeout=5).content)


def test_slow_head_gets_408_and_close(gw: InProcessGateway) -> None:
    before = _events(gw)[HEAD_TIMEOUT]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as s:
        s.sendall(b"GET /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\n")
        for _ in range(5):  # a header byte now and then: the head still never completes
            time.sleep(0.4)
            try:
                s.sendall(b"X")
            except OSError:
                break
        data = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"did not arrive within 1 s" in data
    assert time.monotonic() - started < 5
    # a connection that sends nothing is closed without an answer
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as s:
        assert s.recv(100) == b""
    assert _events(gw)[HEAD_TIMEOUT] >= before + 2
    scrape = requests.get(f"http://{gw.metrics_address}/metrics", timeout=5).text
    assert 'openeas_gateway_connections_closed_total{reason="head_timeout"}' in scrape
    _ok(gw)


def test_body_under_min_rate_gets_408(gw: InProcessGateway) -> None:
    before = _events(gw)[BODY_TOO_SLOW]
    with socket.create_connection(("127.0.0.1", gw.port()), timeout=10) as s:
        s.sendall(
            b"POST /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\n"
            b"Content-Length: 100000\r\n\r\n" % TOKEN.encode()
        )
        data = b""
        deadline = time.monotonic() + 8
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            try:
                s.sendall(b"x" * 10)  # 10 bytes every 0.3 s: far under 1000 bytes/s
            except OSError:
                break
            try:
                got = s.recv(65536)
            except TimeoutError:
                continue
            if not got:
                break
            data += got
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert _events(gw)[BODY_TOO_SLOW] == before + 1
    _ok(gw)


def test_too_many_headers_431(gw: InProcessGateway) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(25))
    out = exchange(gw.port(), b"GET /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert out.answers[0].status == 431 and out.closed
    assert b"more than 20 header lines" in out.answers[0].body


def _connect(source: str, port: int) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _refused(s: socket.socket) -> bool:
    """True when the gateway closed `s` at once (reset or EOF) instead of waiting for a request."""
    s.settimeout(2)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connection_flood_from_one_address_is_refused_others_served(gw: InProcessGateway) -> None:
    before = _events(gw)
    port = gw.port()
    flood = [_connect("127.0.0.2", port) for _ in range(10)]
    try:
        time.sleep(0.2)
        extra = [_connect("127.0.0.2", port) for _ in range(5)]
        assert all(_refused(s) for s in extra), "connections over the per-client limit were kept"
        for s in extra:
            s.close()
        # another address is served meanwhile, on a fresh connection
        other = _connect("127.0.0.3", port)
        other.sendall(
            b"GET /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode()
        )
        other.settimeout(5)
        assert other.recv(100).startswith(b"HTTP/1.1 200")
        other.close()
        # the flood's own connections still work
        flood[0].sendall(
            b"GET /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode()
        )
        flood[0].settimeout(5)
        assert flood[0].recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in flood:
            s.close()
    assert _events(gw)[REFUSED_CLIENT] == before[REFUSED_CLIENT] + 5
    # per listener: 40 in all, from four addresses
    time.sleep(0.3)
    many = [_connect(f"127.0.0.{4 + i // 10}", port) for i in range(40)]
    try:
        time.sleep(0.2)
        late = _connect("127.0.0.9", port)
        assert _refused(late)
        late.close()
    finally:
        for s in many:
            s.close()
    assert _events(gw)[REFUSED_LISTENER] >= before[REFUSED_LISTENER] + 1
    time.sleep(0.3)
    _ok(gw)


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [("garbage", 502, "bad_response"), ("huge-head", 502, "bad_response"), ("silent", 408, "timeout")],
)
def test_misbehaving_instance(gw: InProcessGateway, path: str, status: int, reason: str) -> None:
    started = time.monotonic()
    resp = requests.get(gw.url("svc", "/" + path), headers=AUTH, timeout=10)
    assert resp.status_code == status, resp.text
    assert time.monotonic() - started < 4  # bounded: the service's keepalive is 1.5 s
    if status == 502:
        assert "invalid HTTP response" in resp.json()["message"]
    rejected = _stats(gw)["services"]["svc"]["rejected"]  # type: ignore[index]
    assert rejected.get(reason, 0) >= 1, rejected
    _ok(gw)


def test_instance_stops_mid_body_cuts_the_client(gw: InProcessGateway) -> None:
    out = exchange(
        gw.port(),
        b"GET /api/predict/svc/cut HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode(),
    )
    assert out.answers[0].status == 200 and out.closed
    assert out.answers[0].body == b"0123456789"  # the client sees a body shorter than announced
    _ok(gw)


def test_bounds_from_the_gateway_record() -> None:
    """The record's `bounds` object is read into the settings; defaults fill what it omits; a bad
    value is refused with the field's name."""
    now = time.time()
    spec = {"enable_internet": True, "listen": {"internet": "127.0.0.1:0"}, "bounds": {"head_timeout_s": 3}}
    got = gateway_settings(GatewayRecord("edge", spec, "Running", now, now)).bounds
    assert got == ClientBounds(head_timeout_s=3.0)
    bad = {**spec, "bounds": {"max_header_count": 2}}
    with pytest.raises(SpecError, match="max_header_count"):
        gateway_settings(GatewayRecord("edge", bad, "Running", now, now))
    assert connection_verdict(ClientBounds(max_connections=2), 2, 0) == REFUSED_LISTENER
    assert connection_verdict(ClientBounds(max_connections_per_client=1), 0, 1) == REFUSED_CLIENT
    assert connection_verdict(ClientBounds(), 10, 10) is None
