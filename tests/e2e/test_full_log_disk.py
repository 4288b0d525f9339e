"""A full disk for logs does not stop serving (docs/security.md "Crashes and failing disks").

The data dir's `logs/` folder (gateway access logs, instance logs, queue server logs) is a real
512 KiB tmpfs mounted by the test, filled to the last byte while `openeas server` serves. Then:
every call through the shared gateway still answers 200, the gateway counts the access-log lines
it drops (`openeas_gateway_access_log_dropped_lines_total`) and says so once in the log, a
rolling update still starts a new instance (its log cannot take the runtime's start line), and
once space is freed the access log is written again and the gateway says so.

An instance's own output to a full disk is the instance's business: this one logs through
Python's `logging`, which drops what it cannot write (uvicorn and the built-in processors do the
same); a program that exits on a failed write to stdout would exit.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import httpx

from tests.harness import app_command, serving

REQUESTS = 200


def fill(path: Path) -> None:
    """Write `path` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")


def test_full_log_disk_does_not_stop_serving(tmp_path: Path) -> None:
    data = tmp_path / "data"
    logs = data / "logs"
    logs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(logs)], check=True)
    try:
        with contextlib.contextmanager(serving)(data) as server:
            spec = {
                "metadata": {"name": "chatty", "instance": 1},
                "containers": [{"command": app_command("chatty.py"), "port": 8000,
                                "health_check": {"http_get": {"path": "/health"}}}],
            }  # fmt: skip
            view = server.deploy(spec, tmp_path)
            url, token = view["endpoints"]["internet"] + "/hello", view["token"]
            call = httpx.Client(headers={"Authorization": token}, timeout=10)
            api = server.client()
            metrics_at = api.get("/api/v2/gateways/local/shared").json()["metrics"][0]

            def dropped() -> int:
                text = httpx.get(f"http://{metrics_at}/metrics", timeout=10).text
                found = re.search(r"^openeas_gateway_access_log_dropped_lines_total (\S+)$", text, re.M)
                return int(float(found.group(1))) if found else -1

            access_log = logs / "gateway" / "shared-access.log"
            for _ in range(10):
                assert call.get(url).status_code == 200
            server.wait_for(lambda: access_log.exists() and access_log.stat().st_size > 0, 10, "access lines")
            server.wait_for(lambda: dropped() == 0, 10, "the dropped-lines counter at 0")

            fill(logs / "filler")
            codes = [call.get(url).status_code for _ in range(REQUESTS)]
            assert codes == [200] * REQUESTS, codes
            server.wait_for(lambda: dropped() >= REQUESTS, 10, "the gateway to count its dropped lines")
            server.wait_for(lambda: "cannot write the access log" in server.log(), 10, "the warning")
            assert server.log().count("cannot write the access log") == 1  # once per outage

            # a new instance starts although its log cannot take a byte
            changed = {**spec["containers"][0], "env": [{"name": "V", "value": "2"}]}
            update = {"spec": {"containers": [changed]}}
            assert api.put("/api/v2/services/local/chatty", json=update).is_success

            def updated() -> bool:
                desc = api.get("/api/v2/services/local/chatty").json()
                rows = api.get("/api/v2/services/local/chatty/instances").json()["instances"]
                return desc["status"] == "Running" and [r["revision"] for r in rows] == [2]

            server.wait_for(updated, 60, "the rolling update on a full disk")
            assert call.get(url).status_code == 200

            (logs / "filler").unlink()
            size = access_log.stat().st_size
            for _ in range(10):
                assert call.get(url).status_code == 200
            server.wait_for(lambda: access_log.stat().st_size > size, 10, "access lines written again")
            server.wait_for(lambda: "is written again" in server.log(), 10, "the recovery line")
            call.close()
            api.close()
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)
