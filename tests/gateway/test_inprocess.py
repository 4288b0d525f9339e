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


def test_a_service_that_loses_instances_keeps_answering(upstreams: tuple[Upstream, Upstream]) -> None:
    """The picker (and its round-robin cursor) is kept across snapshots; with the cursor past the
    new, shorter instance list the next pick read past its end and the request got a 400 (CI:
    node C's 2 of 4 instances gone, tests/cluster/test_three_hosts.py)."""
    a, b = upstreams
    four = route("svc", TOKEN, [a.port, b.port, a.port, b.port])
    with running_gateway(RoutingSnapshot(1, {"svc": four})) as gw, requests.Session() as session:
        for _ in range(3):  # the cursor now at the 4th instance
            assert session.get(gw.url("svc", "/echo"), headers=AUTH, timeout=5).status_code == 200
        gw.install(RoutingSnapshot(2, {"svc": route("svc", TOKEN, [a.port, b.port])}))
        answers = [session.get(gw.url("svc", "/echo"), headers=AUTH, timeout=5) for _ in range(4)]
        assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
        assert sorted(r.json()["name"] for r in answers) == ["a", "a", "b", "b"]


class _BrokenPicker:
    """A picker with a bug: the gateway must blame itself (500), not the client (400)."""

    wants_body = False

    def pick(self, *_: object) -> None:
        raise RuntimeError("a bug in a picker")


def test_a_bug_while_handling_a_request_is_a_500_and_the_gateway_goes_on(
    upstreams: tuple[Upstream, Upstream],
) -> None:
    a, _ = upstreams
    snap = RoutingSnapshot(1, {"svc": route("svc", TOKEN, [a.port]), "ok": route("ok", TOKEN, [a.port])})
    with running_gateway(snap) as gw:
        gw.call(lambda g: setattr(g.routes[b"svc"], "picker", _BrokenPicker()))
        broken = requests.post(gw.url("svc", "/echo"), data=b"hi", headers=AUTH, timeout=5)
        assert broken.status_code == 500, broken.text
        assert broken.json()["code"] == 500 and "bug" in broken.json()["message"]
        assert requests.get(gw.url("ok", "/echo"), headers=AUTH, timeout=5).status_code == 200
        assert gw.call(lambda g: g.metrics_snapshot()).services["svc"].rejected == {"internal": 1}
