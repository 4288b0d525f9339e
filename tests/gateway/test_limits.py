"""Rate limits (429), service concurrency (429), instance queues (450 and 408): a real gateway.

Counts are exact: a token bucket starts full with a burst equal to its limit, and the requests of
one check are pipelined in one write, so they all arrive well within the time one token takes to
come back (1/limit s).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    GatewayProc,
    Upstream,
    add_service,
    make_registry,
    read_responses,
    start_gateway,
)

TOKEN = "tok-Limit-0123456789abcdefghi"
AUTH = {"Authorization": TOKEN}
GATEWAY_SPEC: dict[str, Any] = {
    "listen": {"internet": "127.0.0.1:0"},
    "enable_internet": True,
    "group_rate_limit": 6,
}


def _policy(kind: str, limit: int) -> dict[str, Any]:
    return {"networking": {"gateway_policy": {kind: {"enable": True, "limit": limit}}}}


def _rpc(**rpc: Any) -> dict[str, Any]:
    return {"metadata": {"rpc": rpc}}


@pytest.fixture(scope="module")
def lim(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]
) -> Iterator[tuple[GatewayProc, Registry]]:
    a, b = upstreams
    data_dir = tmp_path_factory.mktemp("lim")
    registry = make_registry(data_dir)
    registry.put_gateway("lim", GATEWAY_SPEC)
    add = add_service
    add(registry, "plain", TOKEN, [a.port], gateway="lim")
    add(registry, "svc_rate", TOKEN, [a.port], gateway="lim", extra=_policy("rate_limit", 5))
    add(registry, "inst_rate", TOKEN, [a.port, b.port], gateway="lim", extra=_rpc(rate_limit=3))
    add(registry, "grp_one", TOKEN, [a.port], gateway="lim", extra={"metadata": {"group": "grp"}})
    add(registry, "grp_two", TOKEN, [b.port], gateway="lim", extra={"metadata": {"group": "grp"}})
    add(registry, "conc", TOKEN, [a.port, b.port], gateway="lim", extra=_policy("concurrency_limit", 2))
    add(registry, "queue", TOKEN, [a.port], gateway="lim", extra=_rpc(worker_threads=1, max_queue_size=2))
    add(registry, "stream", TOKEN, [b.port], keepalive_ms=1000, gateway="lim", extra=_rpc(worker_threads=1))
    gateway = start_gateway(sqlite_url(data_dir), "lim", data_dir)
    try:
        yield gateway, registry
    finally:
        rc = gateway.terminate()
        registry.close()
        assert rc == 0, gateway.stderr_text()
        assert "Traceback" not in gateway.stderr_text() and TOKEN not in gateway.stderr_text()


def _pipelined(port: int, paths: list[str]) -> list[tuple[bytes, dict[str, Any]]]:
    """Send every request in one write on one connection; (head, JSON body) of each answer."""
    reqs = b"".join(
        b"GET /api/predict/%s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % (p.encode(), TOKEN.encode())
        for p in paths
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(reqs)
        return [(head, json.loads(body)) for head, body in read_responses(sock, len(paths))]


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def test_service_rate_limit_429_exactly_over_the_limit(lim: tuple[GatewayProc, Registry]) -> None:
    gw, _ = lim
    answers = _pipelined(gw.ports["internet"], ["svc_rate/echo"] * 8)
    assert [_status(h) for h, _ in answers] == [200] * 5 + [429] * 3
    head, body = answers[-1]
    assert b"\r\nRetry-After: 1" in head and b"Content-Type: application/json" in head
    assert body["code"] == 429 and body["reason"] == "Too Many Requests"
    assert "service rate limit of 5" in body["message"] and "'svc_rate'" in body["message"]
    # a service without a policy on a gateway without a default: no limit
    assert [_status(h) for h, _ in _pipelined(gw.ports["internet"], ["plain/echo"] * 12)] == [200] * 12
    time.sleep(0.45)  # two tokens come back (5 per second)
    assert [_status(h) for h, _ in _pipelined(gw.ports["internet"], ["svc_rate/echo"] * 3)] == [200, 200, 429]


def test_instance_rate_limit(lim: tuple[GatewayProc, Registry]) -> None:
    gw, _ = lim
    answers = _pipelined(gw.ports["internet"], ["inst_rate/echo"] * 8)
    assert [_status(h) for h, _ in answers] == [200] * 6 + [429] * 2  # 3 per instance, 2 instances
    assert sorted(body["name"] for _, body in answers[:6]) == ["a"] * 3 + ["b"] * 3
    message = answers[-1][1]["message"]
    assert "instance rate limit of 3" in message and "metadata.rpc.rate_limit" in message


def test_group_rate_limit_counts_every_member(lim: tuple[GatewayProc, Registry]) -> None:
    gw, _ = lim
    answers = _pipelined(gw.ports["internet"], ["grp_one/echo"] * 4 + ["grp_two/echo"] * 4)
    assert [_status(h) for h, _ in answers] == [200] * 6 + [429] * 2
    assert "group rate limit of 6" in answers[-1][1]["message"] and "'grp'" in answers[-1][1]["message"]


def _concurrently(urls: list[str], gap_s: float = 0.0) -> list[requests.Response]:
    out: list[requests.Response | None] = [None] * len(urls)

    def call(i: int) -> None:
        out[i] = requests.get(urls[i], headers=AUTH, timeout=10)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
        time.sleep(gap_s)
    for t in threads:
        t.join()
    return [r for r in out if r is not None]


def test_concurrency_limit(lim: tuple[GatewayProc, Registry]) -> None:
    gw, _ = lim
    url = gw.internet + "/api/predict/conc/sleep?ms=600"
    started = time.monotonic()
    answers = _concurrently([url] * 4, gap_s=0.05)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 429, 429], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 429)
    assert "2 requests in flight" in refused.json()["message"] and refused.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 2
    # the slots come back when requests end, also when the client hangs up first
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", gw.ports["internet"]), timeout=5) as sock:
            sock.sendall(
                b"GET /api/predict/conc/sleep?ms=300 HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
                % TOKEN.encode()
            )
            time.sleep(0.05)
    time.sleep(0.1)
    assert [r.status_code for r in _concurrently([url] * 2)] == [200, 200]


def test_queue_full_450(lim: tuple[GatewayProc, Registry]) -> None:
    """worker_threads=1, max_queue_size=2: of 5 concurrent requests 1 runs, 2 wait, 2 are shed."""
    gw, _ = lim
    url = gw.internet + "/api/predict/queue/sleep?ms=400"
    stamps: list[tuple[int, float]] = []
    started = time.monotonic()
    barrier = threading.Barrier(5)

    def call() -> None:
        barrier.wait()
        resp = requests.get(url, headers=AUTH, timeout=10)
        stamps.append((resp.status_code, time.monotonic() - started))
        if resp.status_code == 450:
            body = resp.json()
            assert body["code"] == 450 and "queue full" in body["message"]
            assert "max_queue_size" in body["message"]

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in stamps)
    assert codes == [200, 200, 200, 450, 450], stamps
    assert all(t < 0.35 for code, t in stamps if code == 450), stamps  # shed at once
    done = sorted(t for code, t in stamps if code == 200)
    assert done[2] > 1.1, stamps  # one at a time: 0.4 s, 0.8 s, 1.2 s
    # the queue is empty again
    assert requests.get(gw.internet + "/api/predict/queue/echo", headers=AUTH, timeout=5).status_code == 200


def test_time_in_the_queue_counts_toward_keepalive(lim: tuple[GatewayProc, Registry]) -> None:
    """A stream holds the only slot past the keepalive (1 s): the request behind it gets 408."""
    gw, _ = lim
    base = gw.internet + "/api/predict/stream"
    events: list[bytes] = []

    def stream() -> None:
        with requests.get(base + "/sse?n=4&ms=500", headers=AUTH, stream=True, timeout=10) as resp:
            events.extend(line for line in resp.iter_lines() if line.startswith(b"data: "))

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    resp = requests.get(base + "/echo", headers=AUTH, timeout=10)
    elapsed = time.monotonic() - started
    t.join()
    assert resp.status_code == 408, resp.text
    assert "keepalive" in resp.json()["message"] and "1000 ms" in resp.json()["message"]
    assert 0.9 <= elapsed < 1.5, elapsed
    assert len(events) == 4  # the stream itself is not cut
    assert requests.get(base + "/echo", headers=AUTH, timeout=5).status_code == 200


def test_gateway_default_rate_limit_changes_without_restart(lim: tuple[GatewayProc, Registry]) -> None:
    gw, registry = lim
    registry.put_gateway("lim", {**GATEWAY_SPEC, "rate_limit": 3})
    try:
        deadline = time.monotonic() + 3
        while True:
            codes = [_status(h) for h, _ in _pipelined(gw.ports["internet"], ["plain/echo"] * 5)]
            if codes == [200] * 3 + [429] * 2:
                break
            assert codes == [200] * 5, codes
            assert time.monotonic() < deadline, "the gateway's new rate limit was not applied"
            time.sleep(0.1)
        # a service's own policy overrides the gateway default
        time.sleep(1.0)
        assert [_status(h) for h, _ in _pipelined(gw.ports["internet"], ["svc_rate/echo"] * 6)] == [
            200
        ] * 5 + [429]
    finally:
        registry.put_gateway("lim", GATEWAY_SPEC)
