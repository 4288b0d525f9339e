"""Token rotation under load: a service and a group hold two tokens while callers move over.

Callers on each token send ~25 req/s each through the shared gateway the whole time. Measured:
zero 401s on the old token until `openeas token revoke --old` is called, zero 401s on the new
one from the moment `openeas token rotate` printed it, 401 on the old one shortly after the
revoke and from then on; the instance and the gateway process keep their pids (no restart); the
endpoint views show both tokens while two exist.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, app_spec, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("rotation") / "data")


class Caller(threading.Thread):
    """Calls `path` with `token` every 40 ms; keeps (send time, status) of every answer."""

    def __init__(self, base: str, path: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.path, self.token = base, path, token
        self.results: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            while not self.halt.is_set():
                sent = time.monotonic()
                try:
                    status = client.get(self.path, headers={"Authorization": self.token}).status_code
                except httpx.HTTPError:
                    status = -1
                self.results.append((sent, status))
                self.halt.wait(0.04)

    def stop(self) -> list[tuple[float, int]]:
        self.halt.set()
        self.join(10)
        return self.results


def statuses(results: list[tuple[float, int]], start: float = 0.0, end: float = float("inf")) -> set[int]:
    return {s for t, s in results if start <= t < end}


def test_rotation_without_a_gap(server: Server, tmp_path: Path) -> None:
    spec = app_spec(tmp_path, "rot")
    spec["metadata"]["group"] = "rotg"
    view = server.deploy(spec, tmp_path)
    old_svc = view["token"]
    old_group = server.cli_json("group", "desc", "rotg")["token"]
    gateway_pids = json.loads((server.data_dir / "server.json").read_text())["gateway_pids"]
    url = f"{server.internet}/api/predict/rot/pid"
    pid = httpx.get(url, headers={"Authorization": old_svc}).json()["pid"]

    callers = {
        "svc-old": Caller(server.internet, "/api/predict/rot/pid", old_svc),
        "group-old": Caller(server.internet, "/api/predict/rotg/pid", old_group),
    }
    for c in callers.values():
        c.start()
    time.sleep(1)

    new_svc = server.cli("token", "rotate", "rot").stdout.strip()
    callers["svc-new"] = Caller(server.internet, "/api/predict/rot/pid", new_svc)
    callers["svc-new"].start()
    new_group = server.cli("token", "rotate", "rotg", "--group").stdout.strip()
    callers["group-new"] = Caller(server.internet, "/api/predict/rotg/pid", new_group)
    callers["group-new"].start()
    assert new_svc != old_svc and new_group != old_group and len(new_svc) >= 16

    # the endpoint views show both while two exist
    desc = server.cli_json("desc", "rot")
    assert (desc["token"], desc["old_token"]) == (new_svc, old_svc)
    group = server.cli_json("group", "desc", "rotg")
    assert (group["token"], group["old_token"]) == (new_group, old_group)
    # a third token is refused until the old one goes
    again = server.cli("token", "rotate", "rot", check=False)
    assert again.returncode == 1 and "revoke the old one" in again.stderr
    time.sleep(2)

    revoke_sent = time.monotonic()
    shown = server.cli_json("token", "revoke", "rot", "--old")
    assert shown == {"kind": "service", "name": "rot", "token": new_svc, "old_token": None}
    server.cli("token", "revoke", "rotg", "--old", "--group")
    revoked = time.monotonic()
    time.sleep(2)
    results = {name: c.stop() for name, c in callers.items()}

    for name in ("svc-old", "group-old"):
        assert statuses(results[name], end=revoke_sent) == {200}, name
        # the gateways apply the revoke on their next snapshot (~100 ms): 401 from 1 s after on
        assert statuses(results[name], start=revoked + 1.0) == {401}, name
    for name in ("svc-new", "group-new"):
        assert statuses(results[name]) == {200}, name
        assert len(results[name]) > 50, name
    assert sum(len(r) for r in results.values()) > 300

    after = httpx.get(url, headers={"Authorization": new_svc}).json()
    assert after["pid"] == pid, "the instance was restarted"
    assert json.loads((server.data_dir / "server.json").read_text())["gateway_pids"] == gateway_pids
    assert server.cli_json("desc", "rot")["old_token"] is None
    nothing = server.cli("token", "revoke", "rot", "--old", check=False)
    assert nothing.returncode == 1 and "holds no old token" in nothing.stderr
    assert "--old" in server.cli("token", "revoke", "rot", check=False).stderr
