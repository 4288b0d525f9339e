"""Scale from zero (requests held for a first instance) and traffic mirroring: a real gateway
process, real instances, a SQLite registry that the test changes as the control plane would."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    HERE,
    GatewayProc,
    Upstream,
    _read_line,
    add_instance,
    add_service,
    make_registry,
    start_gateway,
    start_upstream,
)

TOKEN = "tok-Mirror-0123456789abcdefgh"
AUTH = {"Authorization": TOKEN}
ZERO: dict[str, Any] = {
    "autoscaler": {"min": 0, "max": 2, "scaleStrategies": [{"metricName": "qps", "threshold": 10}]}
}


def start_counter(name: str, sleep_s: float = 0.0) -> Upstream:
    cmd = [sys.executable, str(HERE / "counting_app.py"), "--name", name, "--sleep", str(sleep_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = _read_line(proc, 10, f"counting app {name}")
    return Upstream(name, int(line.rsplit(" ", 1)[1]), proc)


def counts(up: Upstream) -> dict[str, Any]:
    doc: dict[str, Any] = requests.get(f"http://127.0.0.1:{up.port}/count", timeout=10).json()
    return doc


@dataclass
class Env:
    registry: Registry
    gateway: GatewayProc
    main: Upstream
    copy: Upstream
    slow: Upstream

    def url(self, service: str, sub: str = "") -> str:
        return f"{self.gateway.internet}/api/predict/{service}{sub}"

    def waiting(self, service: str) -> int:
        stats = requests.get(f"http://{self.gateway.metrics[0]}/stats", timeout=5).json()
        return int(stats["services"].get(service, {}).get("waiting", 0))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir: Path = tmp_path_factory.mktemp("mirror")
    registry = make_registry(data_dir)
    registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0"}, "enable_internet": True})
    main = start_upstream("main")
    copy, slow = start_counter("copy"), start_counter("slow", sleep_s=20.0)
    add_service(registry, "main", TOKEN, [main.port], extra={"mirror": {"target": ["copy"], "ratio": 50}})
    add_service(registry, "copy", TOKEN, [copy.port])
    add_service(registry, "tee", TOKEN, [main.port], extra={"mirror": {"target": ["slow"], "ratio": 100}})
    add_service(registry, "slow", TOKEN, [slow.port])
    add_service(registry, "zero", TOKEN, [], keepalive_ms=60_000, extra=ZERO)
    add_service(registry, "zero_leave", TOKEN, [], keepalive_ms=60_000, extra=ZERO)
    add_service(registry, "zero_short", TOKEN, [], keepalive_ms=1500, extra=ZERO)
    small = {**ZERO, "metadata": {"rpc": {"max_queue_size": 2}}}
    add_service(registry, "zero_small", TOKEN, [], keepalive_ms=4000, extra=small)
    add_service(registry, "empty", TOKEN, [], keepalive_ms=60_000)  # no autoscaler: no hold
    gateway = start_gateway(sqlite_url(data_dir), "shared", data_dir)
    try:
        yield Env(registry, gateway, main, copy, slow)
    finally:
        rc = gateway.terminate()
        registry.close()
        for up in (main, copy, slow):
            up.stop()
        stderr = gateway.stderr_text()
        assert rc == 0, stderr
        assert "Traceback" not in stderr and TOKEN not in stderr, stderr


# -- mirroring ------------------------------------------------------------------------------------


def _mirror_counts(env: Env) -> dict[str, int]:
    doc = requests.get(f"http://{env.gateway.metrics[0]}/stats", timeout=5).json()
    return dict(doc["mirror"])


def test_ratio_50_copies_exactly_every_second_request(env: Env) -> None:
    session = requests.Session()
    before = _mirror_counts(env)
    for i in range(200):
        r = session.post(
            env.url("main", f"/echo/x?i={i}"), data=f"body-{i}".encode(), headers=AUTH, timeout=10
        )
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "main"  # the caller always gets the main service's answer
    doc = counts(env.copy)
    deadline = time.monotonic() + 30
    while doc["finished"] < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
        doc = counts(env.copy)
    time.sleep(0.5)  # a 101st copy would have arrived by now
    doc = counts(env.copy)
    assert doc["started"] == 100, doc["started"]
    got = sorted(int(r["path"].rsplit("=", 1)[1]) for r in doc["requests"])
    assert got == list(range(1, 200, 2))  # the accumulator passes 100 on every second request
    for rec in doc["requests"]:
        i = int(rec["path"].rsplit("=", 1)[1])
        assert rec["method"] == "POST"
        assert rec["path"] == f"/echo/x?i={i}"  # the forwarded path, prefix stripped
        assert rec["body"] == f"body-{i}"
        assert "authorization" not in rec["headers"]
        assert rec["headers"]["x-eas-mirror"] == "1"
    after = _mirror_counts(env)  # the gateway's own count of copies, as /stats and /metrics show it
    assert after["sent"] - before["sent"] == 100, (before, after)
    assert after["dropped"] == before["dropped"] and after["failed"] == before["failed"]


def test_chunked_body_is_copied_whole(env: Env) -> None:
    before = counts(env.copy)["started"]

    def gen() -> Iterator[bytes]:
        yield b"part-one;"
        yield b"part-two"

    # two requests: ratio 50 copies exactly one of them
    for _ in range(2):
        r = requests.post(env.url("main", "/echo/chunked"), data=gen(), headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json()["body_len"] == 17
    deadline = time.monotonic() + 20
    while counts(env.copy)["started"] < before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    rec = counts(env.copy)["requests"][-1]
    assert rec["path"] == "/echo/chunked" and rec["body"] == "part-one;part-two"
    assert rec["headers"]["content-length"] == "17"


def test_slow_mirror_target_does_not_hold_the_main_requests(env: Env) -> None:
    # the target sleeps 20 s per copy; every main request is answered while no copy has been
    session = requests.Session()
    for i in range(20):
        r = session.post(env.url("tee", "/echo"), data=b"x" * 100, headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json()["name"] == "main", (i, r.text)
    doc = counts(env.slow)
    assert doc["finished"] == 0, doc  # the mains did not wait for a single copy's answer
    deadline = time.monotonic() + 20
    while counts(env.slow)["started"] < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts(env.slow)["started"] == 20  # and the copies were all sent, in parallel


# -- scale from zero ------------------------------------------------------------------------------


def test_held_request_is_sent_when_an_instance_becomes_ready(env: Env) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        future = pool.submit(
            requests.post, env.url("zero", "/echo/held"), data=b"wait-for-me", headers=AUTH, timeout=60
        )
        deadline = time.monotonic() + 20
        while env.waiting("zero") != 1:
            assert time.monotonic() < deadline, "the request is not held"
            assert not future.done(), future.result().text
            time.sleep(0.05)
        time.sleep(1.0)
        assert not future.done()  # still waiting, not a 503
        add_instance(env.registry, "zero", "zero-0", env.main.port)  # as the reconciler would
        r = future.result(timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "main" and body["path"] == "/echo/held" and body["body_len"] == 11
    assert time.monotonic() - t0 >= 1.0
    assert env.waiting("zero") == 0


def test_held_request_past_keepalive_gets_503(env: Env) -> None:
    r = requests.get(env.url("zero_short", "/echo"), headers=AUTH, timeout=30)
    assert r.status_code == 503, r.text
    assert "scaled to zero" in r.json()["message"] and "1500 ms" in r.json()["message"]
    assert r.headers["Retry-After"] == "1"
    assert env.waiting("zero_short") == 0


def test_held_requests_are_bounded_by_max_queue_size(env: Env) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(requests.get, env.url("zero_small", "/echo"), headers=AUTH, timeout=30)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 20
        while env.waiting("zero_small") != 2:
            assert time.monotonic() < deadline, "the requests are not held"
            time.sleep(0.05)
        r = requests.get(env.url("zero_small", "/echo"), headers=AUTH, timeout=10)
        assert r.status_code == 450, r.text
        assert "first instance" in r.json()["message"]
        assert [f.result().status_code for f in futures] == [503, 503]


def test_client_that_leaves_is_no_longer_held(env: Env) -> None:
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(env.url("zero_leave", "/echo"), headers=AUTH, timeout=1.0)
    deadline = time.monotonic() + 10
    while env.waiting("zero_leave") != 0:
        assert time.monotonic() < deadline, "a request whose client left is still held"
        time.sleep(0.05)


def test_without_autoscaler_min_0_no_instance_is_503_at_once(env: Env) -> None:
    r = requests.get(env.url("empty", "/echo"), headers=AUTH, timeout=10)
    assert r.status_code == 503 and "no healthy upstream" in r.json()["message"]
    assert json.loads(r.text)["message"].count("scaled to zero") == 0
