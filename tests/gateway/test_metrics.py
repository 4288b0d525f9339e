"""Gateway metrics on a real gateway process: /metrics and /stats on the metrics listener count
exactly what the test sent, by service, status and reason; the listener is not on the data plane."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    GatewayProc,
    Upstream,
    add_service,
    free_port,
    make_registry,
    start_gateway,
)

TOKEN = "tok-Metrics-0123456789abcdefghi"
GROUP_TOKEN = "tok-MetricsGroup-0123456789abcd"
MiB = 1024 * 1024
BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    resp = requests.get(f"http://{address}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def with_name(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def stats(address: str) -> dict[str, Any]:
    resp = requests.get(f"http://{address}/stats", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    doc: dict[str, Any] = resp.json()
    return doc


@dataclass
class MetricsStack:
    registry: Registry
    gateway: GatewayProc
    access_log: Path

    def url(self, service: str, sub: str = "") -> str:
        return f"{self.gateway.internet}/api/predict/{service}{sub}"


@pytest.fixture(scope="module")
def mstack(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]
) -> Iterator[MetricsStack]:
    a, b = upstreams
    data_dir = tmp_path_factory.mktemp("gwm")
    registry = make_registry(data_dir)
    registry.put_gateway(
        "shared",
        {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}, "max_body_bytes": MiB},
    )
    add_service(registry, "m1", TOKEN, [a.port])
    limited = {"networking": {"gateway_policy": {"rate_limit": {"enable": True, "limit": 3}}}}
    add_service(registry, "lim", TOKEN, [a.port], extra=limited)
    one_slot = {"metadata": {"rpc": {"worker_threads": 1, "max_queue_size": 0}}}
    add_service(registry, "slow", TOKEN, [b.port], keepalive_ms=30000, extra=one_slot)
    add_service(registry, "idle", TOKEN, [])  # no instance: 503
    add_service(registry, "ga", TOKEN, [a.port], extra={"metadata": {"group": "g"}})
    registry.ensure_group("g", GROUP_TOKEN)
    access_log = data_dir / "access.log"
    gw = start_gateway(sqlite_url(data_dir), "shared", data_dir, "--access-log", str(access_log))
    try:
        yield MetricsStack(registry, gw, access_log)
    finally:
        gw.terminate()
        registry.close()


def test_ready_line_names_the_metrics_listener(mstack: MetricsStack) -> None:
    gw = mstack.gateway
    assert len(gw.metrics) == 1
    host, port = gw.metrics[0].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) not in gw.ports.values()
    doc = stats(gw.metrics[0])
    assert doc["gateway"] == "shared" and doc["pid"] == gw.proc.pid and doc["buckets"] == BUCKETS
    assert doc["started"] <= time.time()
    assert requests.get(f"http://{gw.metrics[0]}/nope", timeout=5).status_code == 404


def test_counts_match_what_was_sent(mstack: MetricsStack) -> None:
    gw = mstack.gateway
    address = gw.metrics[0]
    sent: Counter[tuple[str, int]] = Counter()  # (service label, status) -> requests
    ids: list[str] = []

    def note(service: str, resp: requests.Response) -> None:
        sent[(service, resp.status_code)] += 1
        ids.append(resp.headers["X-Request-Id"])

    body = b"x" * 100
    with requests.Session() as s:
        for i in range(300):
            headers = {"Authorization": TOKEN if i % 2 else f"Bearer {TOKEN}"}
            resp = s.post(mstack.url("m1", "/raw"), data=body, headers=headers, timeout=10)
            assert resp.status_code == 200 and resp.content == body
            note("m1", resp)
        for auth in ["wrong-token"] * 10 + [None] * 5 + ["Bearer wrong-token"] * 5:
            headers = {"Authorization": auth} if auth else {}
            resp = s.post(mstack.url("m1", "/raw"), data=body, headers=headers, timeout=10)
            assert resp.status_code == 401
            assert resp.json()["request_id"] == resp.headers["X-Request-Id"]
            note("m1", resp)
        for i in range(10):  # each a different unknown name: all counted under "-"
            resp = s.get(mstack.url(f"nosuch{i}", "/x"), headers={"Authorization": TOKEN}, timeout=10)
            assert resp.status_code == 404
            note("-", resp)
        for _ in range(3):
            resp = s.get(mstack.url("idle", "/x"), headers={"Authorization": TOKEN}, timeout=10)
            assert resp.status_code == 503
            note("idle", resp)
        for _ in range(4):  # the group path counts under the member that answered
            resp = s.get(mstack.url("g", "/echo"), headers={"Authorization": GROUP_TOKEN}, timeout=10)
            assert resp.status_code == 200 and resp.json()["path"] == "/echo"
            note("ga", resp)
        for _ in range(12):  # 3 QPS: the first 3 pass, most of the rest get 429
            resp = s.get(mstack.url("lim", "/echo"), headers={"Authorization": TOKEN}, timeout=10)
            assert resp.status_code in (200, 429)
            note("lim", resp)
    assert sent[("lim", 429)] >= 1
    for _ in range(5):  # over 1 MiB: refused from Content-Length, connection closed
        resp = requests.post(
            mstack.url("m1", "/raw"), data=b"y" * (MiB + 1), headers={"Authorization": TOKEN}, timeout=30
        )
        assert resp.status_code == 413
        note("m1", resp)
    # TRACE is refused before routing; it still counts under the service its path names
    resp = requests.request("TRACE", mstack.url("m1", "/x"), timeout=10)
    assert resp.status_code == 405
    note("m1", resp)

    # 450: "slow" has one slot and no queue; while one request holds it, the next is shed
    held: list[requests.Response] = []
    holder = threading.Thread(
        target=lambda: held.append(
            requests.get(mstack.url("slow", "/sleep?ms=3000"), headers={"Authorization": TOKEN}, timeout=30)
        )
    )
    holder.start()
    deadline = time.monotonic() + 20
    while stats(address)["services"].get("slow", {}).get("in_flight") != 1:
        assert time.monotonic() < deadline, "the slow request never showed as in flight"
        time.sleep(0.02)
    assert value(scrape(address), "openeas_gateway_in_flight", service="slow") == 1
    resp = requests.get(mstack.url("slow", "/sleep?ms=0"), headers={"Authorization": TOKEN}, timeout=10)
    assert resp.status_code == 450
    note("slow", resp)
    holder.join(30)
    assert held and held[0].status_code == 200
    note("slow", held[0])

    samples = scrape(address)
    doc = stats(address)
    # every request counted once, under the right service and code, nothing else
    codes = with_name(samples, "openeas_gateway_requests_total")
    expected = {
        frozenset({("service", svc), ("code", str(code)), ("class", f"{code // 100}xx")}): float(n)
        for (svc, code), n in sent.items()
    }
    assert codes == expected
    assert not any("nosuch" in name for name in doc["services"])
    per_service: Counter[str] = Counter()
    for (svc, _), n in sent.items():
        per_service[svc] += n
    reached = {"m1": 300, "ga": 4, "lim": sent[("lim", 200)], "slow": 1}  # got to an instance
    for svc, n in per_service.items():
        entry = doc["services"][svc]
        assert entry["requests"] == n, svc
        assert entry["codes"] == {str(c): k for (s2, c), k in sent.items() if s2 == svc}, svc
        assert sum(entry["duration"]["counts"]) == n and len(entry["duration"]["counts"]) == len(BUCKETS) + 1
        assert sum(entry["upstream"]["counts"]) == reached.get(svc, 0), svc
        assert entry["in_flight"] == 0 and entry["waiting"] == 0, svc
        assert value(samples, "openeas_gateway_request_duration_seconds_count", service=svc) == n
        assert value(samples, "openeas_gateway_own_duration_seconds_count", service=svc) == n
        assert value(samples, "openeas_gateway_upstream_duration_seconds_count", service=svc) == reached.get(
            svc, 0
        )
        assert value(samples, "openeas_gateway_request_duration_seconds_bucket", service=svc, le="+Inf") == n
        assert value(samples, "openeas_gateway_in_flight", service=svc) == 0
    # the upstream share of the slow request: its instance slept 3 s
    assert doc["services"]["slow"]["upstream"]["sum"] >= 3.0
    assert doc["services"]["slow"]["upstream"]["counts"][BUCKETS.index(5)] == 1
    # rejected, by reason
    rejected = with_name(samples, "openeas_gateway_rejected_total")
    assert rejected == {
        frozenset({("service", "m1"), ("reason", "auth")}): 20.0,
        frozenset({("service", "m1"), ("reason", "size")}): 5.0,
        frozenset({("service", "m1"), ("reason", "method")}): 1.0,
        frozenset({("service", "-"), ("reason", "not_found")}): 10.0,
        frozenset({("service", "idle"), ("reason", "unavailable")}): 3.0,
        frozenset({("service", "lim"), ("reason", "rate")}): float(sent[("lim", 429)]),
        frozenset({("service", "slow"), ("reason", "queue")}): 1.0,
    }
    assert doc["services"]["m1"]["rejected"] == {"auth": 20, "method": 1, "size": 5}
    # bytes: 100 per body; 413 bodies were never read
    assert doc["services"]["m1"]["bytes_out"] == 300 * 100
    assert doc["services"]["m1"]["bytes_in"] == 320 * 100  # the 401s' bodies were read (and dropped)
    assert value(samples, "openeas_gateway_response_bytes_total", service="m1") == 300 * 100
    # ready instances from the routing snapshot
    assert value(samples, "openeas_gateway_upstreams_ready", service="m1") == 1
    assert value(samples, "openeas_gateway_upstreams_ready", service="idle") == 0
    assert doc["services"]["idle"]["ready"] == 0

    # the access log: a line per request with the id the client got, sub-ms durations
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in mstack.access_log.read_text().splitlines()]
        logged = {line["request_id"] for line in lines}
        if set(ids) <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # flushed once a second
    assert set(ids) <= logged
    durations = [line["duration_ms"] for line in lines if line["request_id"] in set(ids)]
    assert any(d != round(d) for d in durations), "duration_ms has only millisecond resolution"
    raw = mstack.access_log.read_text()
    assert TOKEN not in raw and "wrong-token" not in raw


def test_metrics_are_not_on_the_data_plane(mstack: MetricsStack) -> None:
    gw = mstack.gateway
    for base in (gw.internet, gw.intranet):
        for path in ("/metrics", "/stats"):
            resp = requests.get(base + path, timeout=5)
            assert resp.status_code == 404, (base, path)
            assert resp.json()["code"] == 404 and resp.headers["X-Request-Id"]


def _two_free_ports() -> int:
    """A port p with p + 1 free too (for worker 1)."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise AssertionError("no two consecutive free ports")


def test_workers_each_have_their_metrics_listener(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    """`--workers 2` with `listen.metrics: host:p`: worker i on p + i, each counting its own."""
    a, _ = upstreams
    registry = make_registry(tmp_path)
    port = _two_free_ports()
    registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0", "metrics": f"127.0.0.1:{port}"}})
    add_service(registry, "m1", TOKEN, [a.port])
    gw = start_gateway(sqlite_url(tmp_path), "shared", tmp_path, "--workers", "2")
    try:
        assert gw.metrics == [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
        n = 40
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            resp = requests.get(
                gw.internet + "/api/predict/m1/echo",
                headers={"Authorization": TOKEN, "Connection": "close"},
                timeout=10,
            )
            assert resp.status_code == 200
        docs = [stats(address) for address in gw.metrics]
        assert len({d["pid"] for d in docs}) == 2 and gw.proc.pid not in {d["pid"] for d in docs}
        assert sum(d["services"]["m1"]["requests"] for d in docs) == n
        labels = {"service": "m1", "code": "200", "class": "2xx"}
        assert (
            sum(value(scrape(address), "openeas_gateway_requests_total", **labels) for address in gw.metrics)
            == n
        )
    finally:
        gw.terminate()
        registry.close()
