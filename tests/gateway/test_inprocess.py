"""The request path of an in-process `Gateway` (inprocess.py): verdicts on the wire, metrics, swaps.

The admission verdicts are unit-tested in test_admission.py; here the same gateway code runs on
its event loop with real sockets and real instance processes, and each answer is checked where a
client sees it, and where the metrics count it.
"""

from __future__ import annotations

import socket

import requests
from prometheus_client.parser import text_string_to_metric_families

from openeas.gateway.snapshot import RoutingSnapshot
from tests.gateway.harness import Upstream
from tests.gateway.inprocess import route, running_gateway, settings

TOKEN = "tok-inproc-0123456789abcdef"
AUTH = {"Authorization": TOKEN}


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_each_verdict_reaches_the_client_and_the_metrics(upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    snap = RoutingSnapshot(1, {"svc": route("svc", TOKEN, [a.port])})
    with running_gateway(snap, settings(max_body_bytes=1024)) as gw:
        ok = requests.post(gw.url("svc", "/echo?x=1"), data=b"hi", headers=AUTH, timeout=5)
        assert ok.status_code == 200 and ok.json()["path"] == "/echo" and ok.json()["body_len"] == 2
        assert "authorization" not in ok.json()["headers"]  # the token never reaches the instance
        assert ok.headers["X-Request-Id"] == ok.json()["headers"]["x-request-id"]
        codes = {
            401: requests.get(gw.url("svc", "/echo"), timeout=5),
            404: requests.get(gw.url("nope", "/echo"), headers=AUTH, timeout=5),
            413: requests.post(gw.url("svc", "/echo"), data=b"x" * 1025, headers=AUTH, timeout=5),
        }
        for status, resp in codes.items():
            assert resp.status_code == status, (status, resp.text)
            assert resp.json()["code"] == status and resp.json()["request_id"] == resp.headers["X-Request-Id"]
        trace = _raw(gw.port(), b"TRACE /api/predict/svc HTTP/1.1\r\nHost: x\r\n\r\n")
        assert trace.startswith(b"HTTP/1.1 405 ") and b"Connection: close" in trace

        stats = gw.call(lambda g: g.metrics_snapshot()).services
        assert stats["svc"].codes == {200: 1, 401: 1, 413: 1, 405: 1}
        assert stats["svc"].rejected == {"auth": 1, "size": 1, "method": 1}
        assert stats["-"].codes == {404: 1} and stats["-"].rejected == {"not_found": 1}
        # the collector renders the same counters at scrape time
        text = requests.get(f"http://{gw.metrics_address}/metrics", timeout=5).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        key = ("openeas_gateway_requests_total", (("class", "4xx"), ("code", "413"), ("service", "svc")))
        assert samples[key] == 1.0
        assert samples[("openeas_gateway_rejected_total", (("reason", "auth"), ("service", "svc")))] == 1.0
        assert samples[("openeas_gateway_upstreams_ready", (("service", "svc"),))] == 1.0


def test_a_swapped_snapshot_routes_at_once(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    with running_gateway(RoutingSnapshot(1, {"svc": route("svc", TOKEN, [a.port])})) as gw:
        assert requests.get(gw.url("svc", "/echo"), headers=AUTH, timeout=5).json()["name"] == "a"
        gw.install(RoutingSnapshot(2, {"svc": route("svc", TOKEN, [b.port])}))
        assert requests.get(gw.url("svc", "/echo"), headers=AUTH, timeout=5).json()["name"] == "b"
        # both instances: the least-outstanding picker takes equals in turn
        gw.install(RoutingSnapshot(3, {"svc": route("svc", TOKEN, [a.port, b.port])}))
        with requests.Session() as session:
            names = [
                session.get(gw.url("svc", "/echo"), headers=AUTH, timeout=5).json()["name"] for _ in range(6)
            ]
        assert sorted(names) == ["a"] * 3 + ["b"] * 3
        gw.install(RoutingSnapshot(4, {}))
        assert requests.get(gw.url("svc", "/echo"), headers=AUTH, timeout=5).status_code == 404
