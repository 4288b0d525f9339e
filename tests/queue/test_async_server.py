"""Async services through a real `openeas server`: the control plane runs the queue server, the
shared gateway routes `<endpoint>` and `<endpoint>/sink` to it with the service token, the
autoscaler takes the service from 0 to N instances on a backlog and back to 0, and the CLI lists
and retries dead letters; the SDK's `watch()` reads the sink through the gateway (a WebSocket).
On the embedded backend, and (a shorter round) on Redis."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.harness import Server, serving
from tests.queue.harness import WORKER_APP, RedisServer, run_sdk


def async_spec(name: str, log: Path, delay: float = 0.2, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "metadata": {
            "name": name,
            "type": "Async",
            "instance": 1,
            "rpc": {"worker_threads": 4, "keepalive": 30000},
        },
        "containers": [
            {
                "command": f"{sys.executable} {WORKER_APP} $PORT {delay} {log}",
                "port": 8000,
                "health_check": {"http_get": {"path": "/health"}},
            }
        ],
    }
    spec.update(extra)
    return spec


def counts(server: Server, name: str) -> tuple[int, int]:
    view = server.cli_json("desc", name)
    return int(view["instance"]), int(view["running_instances"])


def test_async_service_through_the_server(tmp_path: Path, eas_python: Path) -> None:
    with contextlib.contextmanager(serving)(tmp_path / "data") as server:
        autoscaler = {
            "min": 0,
            "max": 3,
            "scaleStrategies": [{"metricName": "queue", "threshold": 10}],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 2},
                "onZero": {"scaleDownGracePeriodSeconds": 4},
            },
        }
        spec = async_spec(
            "asyncjobs", tmp_path / "jobs.log", delay=1.0, autoscaler=autoscaler, queue={"max_delivery": 2}
        )
        view = server.deploy(spec, tmp_path)
        endpoint, token = view["endpoints"]["internet"], view["token"]
        stat = server.wait_for(lambda: _stat(server, "asyncjobs"), timeout=30, what="the queue server")
        assert stat["endpoints"]["internet"]["sink"] == endpoint + "/sink"
        # idle: the autoscaler takes it to zero
        server.wait_for(lambda: counts(server, "asyncjobs") == (0, 0), timeout=60, what="scale to zero")
        # no token: the gateway refuses, as for any service
        assert requests.post(endpoint, data=b"x", timeout=10).status_code == 401
        # 40 requests (1 s each, 4 at a time per instance) at zero instances: 0 -> 1 -> N on the
        # backlog (threshold 10 per instance, max 3), and every result comes back
        host = endpoint.split("//", 1)[1].split("/", 1)[0]
        seen: list[int] = []
        with ThreadPoolExecutor(1) as pool:
            sdk = pool.submit(run_sdk, eas_python, host, "asyncjobs", token, "poll", "40")
            while not sdk.done():
                seen.append(ready_now(server, "asyncjobs"))
                time.sleep(0.2)
            out = sdk.result()
        assert len(out["results"]) == 40 and {r["requestId"] for r in out["results"]} == set(out["sent"])
        sent = out["sent"]
        assert all(
            r["lastCode"] == "200" and r["data"] == "done:" + sent[r["requestId"]] for r in out["results"]
        )
        assert max(seen) >= 2, seen  # it was at 0 (checked above) when the puts began
        # back to zero when idle
        server.wait_for(lambda: counts(server, "asyncjobs")[0] == 0, timeout=60, what="back to zero")
        # dead letters through the CLI (a 500 twice = max_delivery)
        bad = requests.post(endpoint, data=b"fail please", headers={"Authorization": token}, timeout=10)
        assert bad.status_code == 200
        server.wait_for(
            lambda: server.cli_json("queue", "get", "asyncjobs"), timeout=60, what="a dead letter"
        )
        dead = server.cli_json("queue", "get", "asyncjobs")
        assert [d["tags"]["requestId"] for d in dead] == [bad.headers["X-Eas-Queueservice-Request-Id"]]
        assert dead[0]["deliveries"] == 2
        text = server.cli("queue", "get", "asyncjobs").stdout
        assert "fail please" in text and "REQUEST ID" in text
        assert server.cli_json("queue", "retry", "asyncjobs") == {"retried": 1}
        server.wait_for(
            lambda: _stat(server, "asyncjobs")["counters"]["dead"] == 2, timeout=60, what="dead again"
        )
        assert "Dead letters" in server.cli("queue", "stat", "asyncjobs").stdout
        # a service that is not Async has no queue
        missing = server.cli("queue", "stat", "nosuch", check=False)
        assert missing.returncode == 1 and "nosuch" in missing.stderr


def test_async_service_on_redis(tmp_path: Path, eas_python: Path, redis_server: RedisServer) -> None:
    with contextlib.contextmanager(serving)(tmp_path / "data", "--redis-url", redis_server.url) as server:
        view = server.deploy(async_spec("asyncredis", tmp_path / "r.log"), tmp_path)
        endpoint, token = view["endpoints"]["internet"], view["token"]
        server.wait_for(lambda: _stat(server, "asyncredis"), timeout=30, what="the queue server")
        host = endpoint.split("//", 1)[1].split("/", 1)[0]
        out = run_sdk(eas_python, host, "asyncredis", token, "poll", "10")
        assert {r["requestId"] for r in out["results"]} == set(out["sent"])
        # watch() through the gateway (a WebSocket tunnel, gateway/tunnel.py): every result, once
        out = run_sdk(eas_python, host, "asyncredis", token, "roundtrip", "20", "5")
        assert len(out["results"]) == 20 and {r["requestId"] for r in out["results"]} == set(out["sent"])
        sent = out["sent"]
        assert all(r["data"] == "done:" + sent[r["requestId"]] for r in out["results"])
        import redis

        r = redis.Redis.from_url(redis_server.url)
        assert r.keys("openeas:queue:asyncredis:*"), "the queues live in Redis"
        # a deleted service's queues go with it
        server.cli("delete", "asyncredis")
        server.wait_for(lambda: not r.keys("openeas:queue:asyncredis:*"), timeout=30, what="queues removed")


def ready_now(server: Server, name: str) -> int:
    """Ready instances, from the control API (quicker than a CLI process per sample)."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    view = requests.get(f"{server.api}/api/v2/services/local/{name}", headers=headers, timeout=10).json()
    return int(view["running_instances"])


def _stat(server: Server, name: str) -> dict[str, Any] | None:
    result = server.cli("queue", "stat", name, "--json", check=False)
    if result.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(result.stdout)
    return out
