"""`metadata.memory` on the local runtime: an instance that leaks past it is killed and restarted,
and its instance message, its log and the server log say it exceeded its memory limit.

Through a real `openeas server`: the leaky app (tests/runtime/apps/leaky.py) serves under its
limit, then, asked to leak, grows by 8 MiB every 50 ms; the runtime's RSS watch kills it within
a fraction of a second of passing 96 MiB and the reconciler starts a new one, which serves."""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

import httpx

from openeas.runtime.memory_limit import group_rss_bytes
from tests.harness import serving

LEAKY_APP = Path(__file__).resolve().parent / "apps" / "leaky.py"
LIMIT_MIB = 96


def test_instance_leaking_past_its_memory_limit_is_restarted_with_a_clear_message(tmp_path: Path) -> None:
    spec = {
        "metadata": {"name": "leaky", "instance": 1, "memory": LIMIT_MIB},
        "containers": [
            {
                "command": f"{shlex.quote(sys.executable)} {LEAKY_APP}",
                "port": 8000,
                "health_check": {"http_get": {"path": "/health"}},
            }
        ],
    }
    with contextlib.contextmanager(serving)(tmp_path / "data") as server:
        view = server.deploy(spec, tmp_path)
        endpoint, token = view["endpoints"]["internet"], view["token"]
        call = httpx.Client(headers={"Authorization": token}, timeout=10)
        api = server.client()

        def instance() -> dict[str, Any]:
            rows: list[dict[str, Any]] = api.get("/api/v2/services/local/leaky/instances").json()["instances"]
            assert len(rows) == 1, rows
            return rows[0]

        first = instance()
        # under the limit it serves and is left alone (the watch measures the whole group)
        assert 0 < group_rss_bytes(first["pid"]) < LIMIT_MIB * 1024 * 1024
        old_pid = call.get(endpoint + "/pid").json()["pid"]
        assert call.post(endpoint + "/leak").status_code == 200

        # the instance's message says why while it waits for its restart (backoff 1 s)
        messages: set[str] = set()

        def killed() -> bool:
            row = instance()
            messages.add(row["message"])
            return row["restarts"] >= 1

        server.wait_for(killed, 30, "the leaking instance to be killed and restarted")
        reason = f"exceeded its memory limit (metadata.memory {LIMIT_MIB} MiB"
        assert any(m.startswith(reason) and "restarting in" in m for m in messages), messages
        logs = api.get("/api/v2/services/local/leaky/logs", params={"tail": 50}).json()["logs"]
        log_text = "\n".join(line for log in logs for line in log["lines"])
        assert reason in log_text, log_text
        assert reason in server.log()
        # a new instance serves again, in a new process
        server.wait_for(lambda: instance()["state"] == "ready" and instance()["restarts"] >= 1, 60, "restart")
        # the gateways route to it on their next snapshot (a 503 until then), so wait for a 200
        def new_pid_serves() -> bool:
            reply = call.get(endpoint + "/pid", timeout=10)
            return reply.status_code == 200 and reply.json()["pid"] != old_pid

        server.wait_for(new_pid_serves, 10, "the gateway to route to the restarted instance")
        call.close()
        api.close()
