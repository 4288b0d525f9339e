"""Observability through a real `openeas server`: the shared gateway's /metrics counts exactly the
requests the test sent, the access log has a line per request with its id and never a token, and
the metrics listener is not on the Internet or VPC listener."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Server, app_command, service_spec

MiB = 1024 * 1024

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    resp = requests.get(f"http://{address}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def with_name(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def codes_of(samples: Samples) -> Counter[tuple[str, int]]:
    out: Counter[tuple[str, int]] = Counter()
    for labels, v in with_name(samples, "openeas_gateway_requests_total").items():
        d = dict(labels)
        assert d["class"] == f"{d['code'][0]}xx"
        out[(d["service"], int(d["code"]))] = int(v)
    return out


@pytest.fixture(scope="module")
def services(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    specs = tmp_path_factory.mktemp("specs")
    plain = server.deploy(service_spec("obs", app_command("misbehaving.py")), specs)
    limited_spec = service_spec("obs_lim", app_command("misbehaving.py"))
    limited_spec["networking"] = {"gateway_policy": {"rate_limit": {"enable": True, "limit": 3}}}
    limited = server.deploy(limited_spec, specs)
    assert plain["status"] == limited["status"] == "Running"
    return {"obs": plain, "obs_lim": limited}


def test_metrics_and_access_log_match_what_was_sent(
    server: Server, services: dict[str, dict[str, Any]]
) -> None:
    view = server.cli_json("gateway", "desc", "shared")
    assert len(view["metrics"]) == 1, view
    address = view["metrics"][0]
    assert address.startswith("127.0.0.1:")
    before = codes_of(scrape(address))
    assert sum(before.values()) == 0, before  # nothing went through the gateway yet

    obs, lim = services["obs"], services["obs_lim"]
    token = obs["token"]
    url = obs["endpoints"]["internet"]
    sent: Counter[tuple[str, int]] = Counter()
    ids: list[str] = []

    def note(service: str, resp: requests.Response) -> None:
        sent[(service, resp.status_code)] += 1
        rid = resp.headers["X-Request-Id"]
        if resp.status_code >= 400:
            assert resp.json()["request_id"] == rid
        ids.append(rid)

    body = b"z" * 200
    with requests.Session() as s:
        for i in range(300):  # raw token and Bearer, on the Internet and the VPC endpoint
            auth = token if i % 2 else f"Bearer {token}"
            base = url if i % 3 else obs["endpoints"]["vpc"]
            resp = s.post(base + "/echo", data=body, headers={"Authorization": auth}, timeout=10)
            assert resp.status_code == 200, resp.text
            assert resp.json()["body_len"] == 200
            note("obs", resp)
        # a scrape in the middle: exactly the 300 so far
        mid = scrape(address)
        assert codes_of(mid) == sent
        wrong = ["WRONG-" + "x" * 30] * 10 + [None] * 5 + ["Bearer WRONG-" + "y" * 30] * 5
        for auth in wrong:
            headers = {"Authorization": auth} if auth else {}
            resp = s.post(url + "/echo", data=body, headers=headers, timeout=10)
            assert resp.status_code == 401
            note("obs", resp)
        base = url.rsplit("/api/predict/", 1)[0]
        for i in range(10):
            resp = s.get(f"{base}/api/predict/unknown-{i}/echo", headers={"Authorization": token}, timeout=10)
            assert resp.status_code == 404
            note("-", resp)
        for _ in range(12):
            resp = s.get(
                lim["endpoints"]["internet"] + "/echo", headers={"Authorization": lim["token"]}, timeout=10
            )
            assert resp.status_code in (200, 429)
            note("obs_lim", resp)
    assert sent[("obs_lim", 429)] >= 1
    for _ in range(5):
        resp = requests.post(
            url + "/echo", data=b"b" * (MiB + 1), headers={"Authorization": token}, timeout=30
        )
        assert resp.status_code == 413
        note("obs", resp)

    samples = scrape(address)
    assert codes_of(samples) == sent
    for svc in ("obs", "obs_lim", "-"):
        n = sum(k for (s2, _), k in sent.items() if s2 == svc)
        labels = frozenset({("service", svc)})
        assert samples[("openeas_gateway_request_duration_seconds_count", labels)] == n, svc
        assert samples[("openeas_gateway_in_flight", labels)] == 0, svc
    reached = {"obs": 300, "obs_lim": sent[("obs_lim", 200)]}
    for svc, n in reached.items():
        labels = frozenset({("service", svc)})
        assert samples[("openeas_gateway_upstream_duration_seconds_count", labels)] == n, svc
        assert samples[("openeas_gateway_upstreams_ready", labels)] == 1, svc
    assert with_name(samples, "openeas_gateway_rejected_total") == {
        frozenset({("service", "obs"), ("reason", "auth")}): 20.0,
        frozenset({("service", "obs"), ("reason", "size")}): 5.0,
        frozenset({("service", "-"), ("reason", "not_found")}): 10.0,
        frozenset({("service", "obs_lim"), ("reason", "rate")}): float(sent[("obs_lim", 429)]),
    }
    in_bytes = samples[("openeas_gateway_request_bytes_total", frozenset({("service", "obs")}))]
    out_bytes = samples[("openeas_gateway_response_bytes_total", frozenset({("service", "obs")}))]
    assert in_bytes == 320 * 200  # 300 proxied bodies and the 401s' (read and dropped)
    assert out_bytes > 300 * 50  # the echo JSON of each 200
    stats = requests.get(f"http://{address}/stats", timeout=10).json()
    assert stats["gateway"] == "shared" and stats["services"]["obs"]["requests"] == 325

    # the access log: one line per request with the id the client got; no token anywhere
    log_path = server.data_dir / "logs" / "gateway" / "shared-access.log"
    deadline = time.monotonic() + 15
    while True:
        raw = log_path.read_text() if log_path.exists() else ""
        logged = {json.loads(line)["request_id"] for line in raw.splitlines()}
        if set(ids) <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the gateway flushes once a second
    assert len(ids) == len(set(ids)) and set(ids) <= logged
    for secret in [token, lim["token"], *(w for w in wrong if w)]:
        assert secret.removeprefix("Bearer ") not in raw


def test_metrics_listener_is_not_on_the_data_plane(server: Server) -> None:
    view = server.cli_json("gateway", "desc", "shared")
    metrics_ports = {int(a.rsplit(":", 1)[1]) for a in view["metrics"]}
    assert metrics_ports.isdisjoint({server.gateway_port, server.vpc_port})
    for port in (server.gateway_port, server.vpc_port):
        for path in ("/metrics", "/stats"):
            resp = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert resp.status_code == 404 and resp.json()["code"] == 404, (port, path)
