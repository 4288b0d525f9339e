"""Limits shared by every gateway process and replica through Redis (`--redis-url`, issue 13).

Two replicas of one gateway (two `python -m openeas.gateway --workers 2` on the same store, each
on its own ports), a real redis-server started here. 400 QPS offered over both replicas to a
service limited to 100 QPS, then to a group limited to 100 QPS: the requests admitted per second
(sent and answered in the same second: surely admitted in it) stay within 100 + 2%, and in all
within 100 + 2% per second touched. Then Redis is killed mid-run: every
process falls back to 100 / 4 per process, answers only 200 or 429, and counts the fall-back in
`openeas_gateway_limit_fallbacks_total`; Redis restarted on the same port: exact again. And a
tokens-per-minute limit (usage from a real OpenAI-like instance) holds across all four processes.

Per-instance QPS (metadata.rpc.rate_limit 100, one instance, 400 QPS offered): the same bound.
Service concurrency (limit 4, an instance that takes 1 s and counts what it has in flight at
once): 16 clients at once over all four processes: never more than 4 at the instance, the rest
429. A third gateway process holding all 4 slots is SIGKILLed: its slots are refused at once and
come back within the documented LIVE_S + HEARTBEAT_S (~4 s; 8 s allowed on a loaded machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from openeas.control.gateways import GatewaySupervisor, SupervisorSettings
from openeas.gateway import REDIS_URL_ENV
from openeas.gateway.shared_limits import HEARTBEAT_S, LIVE_S, lease_size
from openeas.store import Registry, sqlite_url
from tests.gateway.harness import GatewayProc, Upstream, add_service, free_port, make_registry, start_gateway
from tests.gateway.paced_load import admitted_per_second, run_paced
from tests.gateway.test_hold_and_mirror import counts, start_counter
from tests.gateway.test_token_limits import chat, start_usage_app

TOKEN = "tok-Shared-0123456789abcdefghij"
LIMIT = 100
SLOTS = 4  # the concurrency limit
BOUND = LIMIT * 102 // 100  # the documented target: at most limit + 2% per second


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket

            with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("redis-server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]
) -> Iterator[tuple[list[GatewayProc], dict[str, Any]]]:
    a, b = upstreams
    work = tmp_path_factory.mktemp("shared")
    redis_port = free_port()
    redis: dict[str, Any] = {"proc": start_redis(redis_port, work), "port": redis_port, "work": work}
    registry: Registry = make_registry(work / "data")
    # port 0: each replica (and its workers, SO_REUSEPORT) gets its own free ports
    registry.put_gateway(
        "rep", {"listen": {"internet": "127.0.0.1:0"}, "enable_internet": True, "group_rate_limit": LIMIT}
    )
    policy = {"networking": {"gateway_policy": {"rate_limit": {"enable": True, "limit": LIMIT}}}}
    add_service(registry, "svc", TOKEN, [a.port, b.port], gateway="rep", extra=policy)
    add_service(registry, "ga", TOKEN, [a.port], gateway="rep", extra={"metadata": {"group": "g"}})
    add_service(registry, "gb", TOKEN, [b.port], gateway="rep", extra={"metadata": {"group": "g"}})
    usage_proc, usage_port = start_usage_app()
    inst, slow = start_counter("inst"), start_counter("slow", 1.0)
    redis["slow"] = slow
    per_instance = {"metadata": {"rpc": {"rate_limit": LIMIT, "worker_threads": 64}}}
    add_service(registry, "inst", TOKEN, [inst.port], gateway="rep", extra=per_instance)
    conc = {
        "metadata": {"rpc": {"worker_threads": 64}},
        "networking": {"gateway_policy": {"concurrency_limit": {"enable": True, "limit": SLOTS}}},
    }
    add_service(registry, "conc", TOKEN, [slow.port], gateway="rep", extra=conc)
    tokens = {"networking": {"gateway_policy": {"token_rate_limit": {"enable": True, "limit": 100}}}}
    add_service(registry, "tok", TOKEN, [usage_port], gateway="rep", extra=tokens)
    url = sqlite_url(work / "data")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    gws = [start_gateway(url, "rep", work, "--workers", "2", "--redis-url", redis_url) for _ in range(2)]
    try:
        _wait_live(gws, 4)
        yield gws, redis
    finally:
        codes = [gw.terminate() for gw in gws]
        stop(redis["proc"])
        stop(usage_proc)
        inst.stop()
        slow.stop()
        registry.close()
        for gw in gws:
            text = gw.stderr_text()
            assert "Traceback" not in text and TOKEN not in text, text
        assert codes == [0, 0]


def _redis_metrics(gws: list[GatewayProc]) -> list[dict[str, float]]:
    out = []
    for gw in gws:
        for hostport in gw.metrics:
            doc = requests.get(f"http://{hostport}/stats", timeout=5).json()
            out.append(doc["redis"])
    return out


def _wait_live(gws: list[GatewayProc], n: int, up: int = 1) -> None:
    deadline = time.monotonic() + 15
    seen: list[dict[str, float]] = []
    while time.monotonic() < deadline:
        seen = _redis_metrics(gws)
        if all(m["up"] == up and (not up or m["live"] == n) for m in seen):
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway processes did not see Redis up={up} with {n} live: {seen}")


def _full_seconds(results: list[tuple[float, float, int]]) -> dict[int, int]:
    """Admitted per second, the first and last (partial) seconds left out."""
    per = admitted_per_second(results)
    seconds = sorted({int(t) for t, _, _ in results})
    return {s: per.get(s, 0) for s in seconds[1:-1]}


def _check_exact(results: list[tuple[float, float, int]], what: str) -> dict[int, int]:
    codes = {code for _, _, code in results}
    assert codes <= {200, 429}, f"{what}: unexpected answers {codes}"
    per = _full_seconds(results)
    print(f"{what}: offered {len(results)}, admitted per second {sorted(per.values())}")
    assert per and max(per.values()) <= BOUND, f"{what}: over {BOUND} in a second: {per}"
    # and in all: at most LIMIT per 1 s window the requests' lifetimes touched
    windows = {int(t) for sent, answered, _ in results for t in (sent, answered)}
    admitted = sum(1 for _, _, code in results if code == 200)
    assert admitted <= BOUND * len(windows), f"{what}: {admitted} admitted in {len(windows)} windows"
    # batching leaves at most ~10% unspent in other processes' hands (lease_size); a loaded
    # machine (load 15+ from other work) also delivers less than the 400 QPS asked and stretches
    # requests across seconds, so the floor here only catches a limit that stopped admitting
    assert sum(per.values()) >= 0.5 * LIMIT * len(per), f"{what}: far under the limit: {per}"
    return per


def test_lease_size_bounds_the_unspent_share() -> None:
    assert lease_size(100, 4) == 2 and lease_size(10, 4) == 1 and lease_size(100_000, 1) == 50


def test_service_and_group_limits_hold_across_replicas_and_workers(
    replicas: tuple[list[GatewayProc], dict[str, Any]],
) -> None:
    gws, _ = replicas
    ports = [gw.ports["internet"] for gw in gws]
    svc = [(p, "/api/predict/svc/", TOKEN) for p in ports]
    outages = [m["outages"] for m in _redis_metrics(gws)]
    _check_exact(run_paced(svc, 400, 10), "service limit, 2 replicas x 2 workers")
    group = [(p, f"/api/predict/{s}/", TOKEN) for p in ports for s in ("ga", "gb")]
    _check_exact(run_paced(group, 400, 5, conns=2), "group limit, 2 replicas x 2 workers")
    # counted in Redis the whole time (a slow Redis call taken for an outage would show here)
    assert [m["outages"] for m in _redis_metrics(gws)] == outages


def test_token_limit_is_shared_by_every_process(replicas: tuple[list[GatewayProc], dict[str, Any]]) -> None:
    """30 tokens per answer, 100 per minute: 4 answers in all (the 4th starts at 90 < 100), not 4
    per process; each request on a new connection, alternating replicas (so every worker serves)."""
    gws, _ = replicas
    while time.time() % 60 > 55:  # the budget is per minute of Redis' clock: stay inside one
        time.sleep(0.5)
    codes = []
    for i in range(12):
        port = gws[i % 2].ports["internet"]
        url = f"http://127.0.0.1:{port}/api/predict/tok/v1/chat/completions"
        r = requests.post(
            url, data=chat(), headers={"Authorization": TOKEN, "Connection": "close"}, timeout=10
        )
        codes.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
    print("token limit across 4 processes:", codes)
    # the debit of an answer reaches Redis a moment after the client has it: one more may pass
    assert 4 <= codes.count(200) <= 5 and set(codes) == {200, 429}, codes


def test_instance_limit_holds_across_replicas_and_workers(
    replicas: tuple[list[GatewayProc], dict[str, Any]],
) -> None:
    gws, _ = replicas
    targets = [(gw.ports["internet"], "/api/predict/inst/", TOKEN) for gw in gws]
    _check_exact(run_paced(targets, 400, 4), "instance limit, 2 replicas x 2 workers")


def _burst(ports: list[int], n: int) -> list[int]:
    """`n` requests to `conc` at once, each on its own connection, alternating replicas."""
    codes: list[int] = [0] * n
    start = threading.Barrier(n)

    def one(i: int) -> None:
        url = f"http://127.0.0.1:{ports[i % len(ports)]}/api/predict/conc/"
        start.wait()
        try:
            r = requests.get(url, headers={"Authorization": TOKEN, "Connection": "close"}, timeout=20)
            codes[i] = r.status_code
        except requests.RequestException:
            codes[i] = -1  # its gateway was killed (the kill test)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_concurrency_limit_holds_across_replicas_and_workers(
    replicas: tuple[list[GatewayProc], dict[str, Any]],
) -> None:
    gws, redis = replicas
    slow: Upstream = redis["slow"]
    ports = [gw.ports["internet"] for gw in gws]
    for _ in range(2):
        codes = _burst(ports, 4 * SLOTS)
        peak = counts(slow)["peak"]
        print(f"concurrency {SLOTS}, {4 * SLOTS} clients at once: {sorted(codes)}, peak {peak}")
        assert set(codes) <= {200, 429}, codes
        assert peak <= SLOTS, f"{peak} in flight at the instance, limit {SLOTS}"
        assert codes.count(429) >= 2 * SLOTS and codes.count(200) >= SLOTS // 2, codes


def test_a_killed_process_gives_its_slots_back(
    replicas: tuple[list[GatewayProc], dict[str, Any]], tmp_path: Path
) -> None:
    gws, redis = replicas
    slow: Upstream = redis["slow"]
    ports = [gw.ports["internet"] for gw in gws]
    url = sqlite_url(redis["work"] / "data")
    redis_url = f"redis://127.0.0.1:{redis['port']}/0"
    third = start_gateway(url, "rep", tmp_path, "--redis-url", redis_url)  # one process
    try:
        _wait_live([third], 5)
        started = counts(slow)["started"]
        held: list[list[int]] = []
        holders = threading.Thread(target=lambda: held.append(_burst([third.ports["internet"]], SLOTS)))
        holders.start()
        deadline = time.monotonic() + 10
        while counts(slow)["started"] < started + SLOTS:
            assert time.monotonic() < deadline, f"the third gateway did not take the slots: {held}"
            time.sleep(0.02)
        os.kill(third.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        third.proc.wait()
        holders.join()
        # its slots are still counted: refused at once
        assert _burst(ports, 2) == [429, 429]
        while True:
            code = _burst(ports, 1)[0]
            waited = time.monotonic() - killed
            if code == 200:
                break
            assert code == 429, code
            assert waited < 2 * (LIVE_S + HEARTBEAT_S), f"slots not back {waited:.1f} s after the kill"
            time.sleep(0.1)
        bound = LIVE_S + HEARTBEAT_S
        print(f"a killed process' slots back {waited:.1f} s after the kill (documented ~{bound} s)")
        assert waited >= 1.0  # not freed by anything but the dead process leaving the live set
    finally:
        if third.proc.poll() is None:
            third.proc.kill()
            third.proc.wait()
    _wait_live(gws, 4)


def test_redis_down_falls_back_then_exact_again(replicas: tuple[list[GatewayProc], dict[str, Any]]) -> None:
    gws, redis = replicas
    ports = [gw.ports["internet"] for gw in gws]
    svc = [(p, "/api/predict/svc/", TOKEN) for p in ports]
    before = sum(m["fallbacks"] for m in _redis_metrics(gws))
    stop(redis["proc"])  # mid-run: the first requests find it gone
    down = run_paced(svc, 400, 4)
    assert {code for _, _, code in down} <= {200, 429}, {code for _, _, code in down}
    metrics = _redis_metrics(gws)
    assert all(m["up"] == 0 for m in metrics), metrics
    assert sum(m["fallbacks"] for m in metrics) > before
    assert all(m["outages"] >= 1 for m in metrics), metrics
    # each process: a local bucket of 100 / 4 live processes (burst 25 + 25 per second)
    per = _full_seconds(down)
    print(f"Redis down: admitted per second {sorted(per.values())}")
    assert per and max(per.values()) <= 2 * LIMIT, per
    assert all(gw.proc.poll() is None for gw in gws)
    redis["proc"] = start_redis(redis["port"], redis["work"])
    _wait_live(gws, 4)
    _check_exact(run_paced(svc, 400, 4), "Redis back")


def test_the_server_supervisor_passes_the_redis_url(tmp_path: Path) -> None:
    """The control plane's hook: a gateway it runs gets the Redis URL when the settings hold one,
    in its environment (a Redis URL can hold a password; argv is readable by every local user)."""
    url = "redis://:pw@127.0.0.1:6390/0"
    sup = GatewaySupervisor("g", "sqlite:///x", tmp_path, settings=SupervisorSettings(redis_url=url))
    assert sup.environment()[REDIS_URL_ENV] == url
    assert not any("6390" in part for part in sup.command())
    assert REDIS_URL_ENV not in GatewaySupervisor("g", "sqlite:///x", tmp_path).environment()
