"""The control API through a real `openeas server` (with its gateway) on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Server, app_spec, pid_alive, serving, start_server, wait_for

SVC = "/api/v2/services"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("control") / "data")


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def view(api: httpx.Client, name: str) -> dict[str, Any]:
    resp = api.get(f"{SVC}/local/{name}")
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def running(api: httpx.Client, name: str, count: int | None = None, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        v = view(api, name)
        settled = v["status"] == "Running" and v["observed_revision"] >= v["revision"]
        return v if settled and (count is None or v["running_instances"] == count) else None

    out: dict[str, Any] = wait_for(check, timeout, f"{name} Running")
    return out


def call(url: str, token: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, url, headers={"Authorization": token}, timeout=10)


def test_health_auth_and_json_errors(server: Server) -> None:
    assert httpx.get(server.api + "/api/v2/health").json() == {"status": "ok", "region": "local"}
    for client in (server.client(token=""), server.client(token="wrong-token")):
        with client:
            resp = client.get(SVC)
            assert resp.status_code == 401
            assert resp.json()["code"] == "Unauthorized" and "admin token" in resp.json()["message"]
            assert client.post(SVC, json={}).status_code == 401
    with server.client() as api:
        assert api.get(SVC).json() == {"services": [], "total": 0}
        resp = api.get(f"{SVC}/cn-hangzhou/anything")
        assert resp.status_code == 404 and resp.json()["code"] == "RegionNotFound"
        resp = api.get(f"{SVC}/local/nothing_here")
        assert resp.status_code == 404 and resp.json()["code"] == "ServiceNotFound"
        assert "nothing_here" in resp.json()["message"]
        resp = api.get("/api/v2/nope")
        assert resp.status_code == 404 and resp.json()["code"] == "NotFound"
        assert api.patch(SVC).status_code == 405


def test_invalid_spec_is_refused_naming_each_field(api: httpx.Client, tmp_path: Path) -> None:
    bad = app_spec(tmp_path, "bad_one")
    bad["metadata"]["instanc"] = 2
    bad["containers"][0]["port"] = 8080
    resp = api.post(SVC, json=bad)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "InvalidSpec"
    fields = {p["field"]: p["problem"] for p in body["problems"]}
    assert "unknown field" in fields["metadata.instanc"]
    assert "reserved" in fields["containers[0].port"]

    resp = api.post(SVC, content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["code"] == "InvalidJSON"
    assert "line 1" in resp.json()["message"]

    other_gw = app_spec(tmp_path, "gw_one")
    other_gw["networking"] = {"gateway": "gw-missing"}
    resp = api.post(SVC, json=other_gw)
    assert resp.status_code == 400
    assert resp.json()["problems"][0]["field"] == "networking.gateway"
    assert api.get(SVC).json()["total"] == 0 or all(
        s["name"] not in ("bad_one", "gw_one") for s in api.get(SVC).json()["services"]
    )


def test_lifecycle_through_the_gateway(server: Server, api: httpx.Client, tmp_path: Path) -> None:
    resp = api.post(SVC, json=app_spec(tmp_path, "life", env=[{"name": "COLOR", "value": "blue"}]))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "Waiting" and created["revision"] == 1
    assert created["endpoints"] == {
        "internet": f"{server.internet}/api/predict/life",
        "vpc": f"{server.vpc}/api/predict/life",
    }
    token = created["token"]
    assert len(token) >= 16 and "token" not in created["spec"]
    v = running(api, "life", 1)
    assert v["running_instances"] == 1 and v["message"] == ""

    url = v["endpoints"]["internet"]
    first = call(url + "/pid", token)
    assert first.status_code == 200, first.text
    assert call(v["endpoints"]["vpc"] + "/env?name=COLOR", token).json() == {"value": "blue"}
    assert call(url + "/pid", "not-the-token").status_code == 401

    dup = api.post(SVC, json=app_spec(tmp_path, "life"))
    assert dup.status_code == 409 and dup.json()["code"] == "ServiceAlreadyExists"

    # -D assignments: two instances, same revision's processes kept (no restart for a count change).
    resp = api.put(f"{SVC}/local/life", json={"assignments": ["metadata.instance=2"]})
    assert resp.status_code == 200 and resp.json()["instance"] == 2
    running(api, "life", 2)
    pids = wait_for(
        lambda: len(s := {call(url + "/pid", token).json()["pid"] for _ in range(12)}) == 2 and s,
        what="two instances serving",
    )
    assert first.json()["pid"] in pids
    insts = api.get(f"{SVC}/local/life/instances").json()["instances"]
    assert sorted(i["state"] for i in insts) == ["ready", "ready"]

    # scale back to one.
    resp = api.post(f"{SVC}/local/life/scale", json={"instance": 1})
    assert resp.status_code == 200
    running(api, "life", 1)
    bad = api.post(f"{SVC}/local/life/scale", json={"instance": "many"})
    assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "instance"

    # token change takes effect at the gateway.
    new_token = "NewToken-" + "x" * 30
    resp = api.put(f"{SVC}/local/life", json={"spec": {"token": new_token}})
    assert resp.status_code == 200 and resp.json()["token"] == new_token
    wait_for(lambda: call(url + "/pid", new_token).status_code == 200, what="new token accepted")
    assert call(url + "/pid", token).status_code == 401
    endpoints = api.get(f"{SVC}/local/life/endpoints").json()
    assert endpoints == {"name": "life", "endpoints": v["endpoints"], "token": new_token, "gateway": "shared"}

    # an invalid modify changes nothing.
    before = view(api, "life")
    resp = api.put(f"{SVC}/local/life", json={"assignments": ["metadata.rpc.keepalive=-5"]})
    assert resp.status_code == 400 and resp.json()["problems"][0]["field"] == "metadata.rpc.keepalive"
    resp = api.put(f"{SVC}/local/life", json={"spec": {"metadata": {"name": "renamed"}}})
    assert resp.status_code == 400 and resp.json()["problems"][0]["field"] == "metadata.name"
    resp = api.put(f"{SVC}/local/life", json={"instance": 3})
    assert resp.status_code == 400 and resp.json()["code"] == "InvalidRequest"
    assert view(api, "life")["revision"] == before["revision"]

    # stop: 503 at the gateway, no processes; start: serving again.
    pid = call(url + "/pid", new_token).json()["pid"]
    resp = api.post(f"{SVC}/local/life/stop")
    assert resp.json()["status"] == "Stopped"
    wait_for(lambda: call(url + "/pid", new_token).status_code == 503, what="503 when stopped")
    wait_for(lambda: not pid_alive(pid), what="instance process gone")
    assert api.get(f"{SVC}/local/life/instances").json()["instances"] == [] or wait_for(
        lambda: api.get(f"{SVC}/local/life/instances").json()["instances"] == [], what="rows gone"
    )
    assert api.post(f"{SVC}/local/life/start").json()["status"] == "Waiting"
    running(api, "life", 1)
    assert call(url + "/pid", new_token).status_code == 200

    logs = api.get(f"{SVC}/local/life/logs", params={"tail": 500}).json()
    assert len(logs["logs"]) == 1
    assert any("GET /pid" in line for line in logs["logs"][0]["lines"])
    one = logs["logs"][0]["instance"]
    assert api.get(f"{SVC}/local/life/logs", params={"instance": one, "tail": 1}).json()["logs"][0]["lines"]
    assert api.get(f"{SVC}/local/life/logs", params={"instance": "nope"}).status_code == 404
    assert api.get(f"{SVC}/local/life/logs", params={"tail": "x"}).status_code == 400

    pid = call(url + "/pid", new_token).json()["pid"]
    resp = api.delete(f"{SVC}/local/life")
    assert resp.json() == {"name": "life", "deleted": True}
    assert not pid_alive(pid), "delete returns once the instances are stopped"
    assert api.get(f"{SVC}/local/life").status_code == 404
    wait_for(lambda: call(url + "/pid", new_token).status_code == 404, what="404 after delete")


def test_crashed_instance_is_marked_failed_and_restarted(api: httpx.Client, tmp_path: Path) -> None:
    created = api.post(SVC, json=app_spec(tmp_path, "crashy")).json()
    v = running(api, "crashy", 1)
    url, token = v["endpoints"]["internet"], created["token"]
    before = call(url + "/pid", token).json()
    os.kill(before["pid"], signal.SIGKILL)

    seen: list[str] = []

    def failed_row() -> bool:
        rows = api.get(f"{SVC}/local/crashy/instances").json()["instances"]
        seen.append(rows[0]["state"] if rows else "-")
        # "failed" lasts for the 1 s backoff; on a loaded machine a poll may land after it
        return bool(rows) and (rows[0]["state"] == "failed" or rows[0]["restarts"] >= 1)

    wait_for(failed_row, timeout=5, what="the instance marked failed", every=0.05)
    assert "failed" in seen or len(seen) > 3, seen
    after = wait_for(
        lambda: (r := call(url + "/pid", token)).status_code == 200 and r.json(), timeout=15, what="restart"
    )
    assert after["pid"] != before["pid"] and after["instance"] == before["instance"]
    row = api.get(f"{SVC}/local/crashy/instances").json()["instances"][0]
    assert row["restarts"] == 1 and row["state"] == "ready"
    running(api, "crashy", 1)
    log = api.get(f"{SVC}/local/crashy/logs").json()["logs"][0]["lines"]
    assert any("killed by SIGKILL" in line for line in log)
    api.delete(f"{SVC}/local/crashy")


def test_crash_loop_is_failed_with_log_lines(api: httpx.Client) -> None:
    spec = {
        "metadata": {"name": "looping"},
        "containers": [{"command": "echo 'fatal: cannot load model /nowhere' >&2; exit 3"}],
    }
    assert api.post(SVC, json=spec).status_code == 201

    def failed() -> dict[str, Any] | None:
        v = view(api, "looping")
        return v if v["status"] == "Failed" else None

    v = wait_for(failed, timeout=15, what="Failed")
    assert "exit code 3" in v["message"]
    assert "openeas logs looping --instance looping-1-0" in v["message"]
    assert "fatal: cannot load model /nowhere" in v["message"]
    rows = api.get(f"{SVC}/local/looping/instances").json()["instances"]
    assert rows[0]["restarts"] >= 2
    # fixing the spec rolls out a revision that works.
    fix = {"spec": {"containers": [{"command": "exec python3 -m http.server $PORT --bind 127.0.0.1"}]}}
    assert api.put(f"{SVC}/local/looping", json=fix).status_code == 200
    v = running(api, "looping", 1)
    assert v["revision"] == 2
    ids = [i["id"] for i in api.get(f"{SVC}/local/looping/instances").json()["instances"]]
    assert ids == ["looping-2-1"]
    api.delete(f"{SVC}/local/looping")


def test_rolling_update_keeps_serving(api: httpx.Client, tmp_path: Path) -> None:
    spec = app_spec(tmp_path, "rolling", instance=2, env=[{"name": "VERSION", "value": "1"}])
    token = api.post(SVC, json=spec).json()["token"]
    v = running(api, "rolling", 2)
    url = v["endpoints"]["internet"]
    # lists are replaced whole by a patch: give the whole container
    container = dict(spec["containers"][0], env=[{"name": "VERSION", "value": "2"}])
    resp = api.put(f"{SVC}/local/rolling", json={"spec": {"containers": [container]}})
    assert resp.status_code == 200 and resp.json()["revision"] == 2
    seen = set()
    codes = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = call(url + "/env?name=VERSION", token)
        codes.add(r.status_code)
        if r.status_code == 200:
            seen.add(r.json()["value"])
        cur = view(api, "rolling")
        # Done once settled and the new revision has answered (under load the switch-over can
        # fall between two of this loop's requests).
        if cur["status"] == "Running" and cur["observed_revision"] == 2 and "2" in seen:
            break
    assert codes == {200}, "a request failed during the rolling update"
    assert "2" in seen

    def rows_of_revision_2() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = api.get(f"{SVC}/local/rolling/instances").json()["instances"]
        return rows if sorted(r["revision"] for r in rows) == [2, 2] else None

    rows = wait_for(rows_of_revision_2, what="the old instances gone")
    assert {call(url + "/env?name=VERSION", token).json()["value"] for _ in range(6)} == {"2"}
    # a change the gateway alone handles (keepalive) does not restart anything.
    pids = {r["pid"] for r in rows}
    api.put(f"{SVC}/local/rolling", json={"assignments": ["metadata.rpc.keepalive=20000"]})
    v = running(api, "rolling", 2)
    assert v["spec"]["metadata"]["rpc"]["keepalive"] == 20000
    assert {r["pid"] for r in api.get(f"{SVC}/local/rolling/instances").json()["instances"]} == pids
    api.delete(f"{SVC}/local/rolling")


def test_server_restart_adopts_leftover_instances(tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves its instance and gateway running; the next one on the
    data dir adopts the instance (same process). Its gateway ports differ (port 0 again), so the
    left gateway runs another config: it is stopped, and the new one serves (the same ports:
    tests/control/test_adoption.py)."""
    data = tmp_path / "data"
    first = start_server(data)
    with first.client() as api:
        api.post(SVC, json=app_spec(tmp_path, "survivor"))
        v = running(api, "survivor", 1)
        token = v["token"]
        old_pid = api.get(f"{SVC}/local/survivor/instances").json()["instances"][0]["pid"]
    old_gateways = json.loads((data / "server.json").read_text())["gateway_pids"]
    # A second server on the same data dir is refused while the first runs.
    second = start_or_error(data)
    assert "already runs on data dir" in second
    first.stop(signal.SIGKILL)  # no cleanup at all: instances and gateway left behind
    assert pid_alive(old_pid)
    third = start_server(data)
    try:
        with third.client() as api:
            v = running(api, "survivor", 1)
            assert v["token"] == token
            assert api.get(f"{SVC}/local/survivor/instances").json()["instances"][0]["pid"] == old_pid
            r = call(v["endpoints"]["internet"] + "/pid", token)
            assert r.status_code == 200
        wait_for(lambda: not any(pid_alive(p) for p in old_gateways), timeout=15, what="old gateway gone")
    finally:
        assert third.stop() == 0
    wait_for(lambda: not pid_alive(old_pid), timeout=15, what="the adopted instance stopped with the server")


def start_or_error(data: Path) -> str:
    try:
        srv = start_server(data, timeout=10)
    except AssertionError as exc:
        return str(exc)
    srv.stop()
    return "started"


def test_port_taken_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    port = server.api.rsplit(":", 1)[1]
    out = start_or_error_args(tmp_path / "other", "--api-port", port)
    assert f"127.0.0.1:{port} for the control API" in out and "--api-port" in out
    assert "Traceback" not in out
    gw_port = server.internet.rsplit(":", 1)[1]
    out = start_or_error_args(tmp_path / "other2", "--gateway-port", gw_port)
    assert "Internet gateway" in out and "--gateway-port" in out


def start_or_error_args(data: Path, *args: str) -> str:
    import subprocess
    import sys

    from tests.harness import clean_env

    result = subprocess.run(
        [sys.executable, "-m", "openeas", "server", "--data-dir", str(data), "--api-port", "0",
         "--gateway-port", "0", "--vpc-port", "0", *args],
        env=clean_env(data), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1, result
    return result.stdout + result.stderr


def test_json_body_shapes(api: httpx.Client, tmp_path: Path) -> None:
    spec = app_spec(tmp_path, "shapes")
    spec["token"] = "GivenToken-1234567890"
    spec["cloud"] = {"computing": {"instance_type": "ecs.c6.large"}}
    created = api.post(SVC, json=spec).json()
    assert created["token"] == "GivenToken-1234567890"
    assert set(created) >= {
        "name", "status", "message", "instance", "running_instances", "token", "gateway", "endpoints",
        "spec", "warnings", "created_at", "updated_at", "revision",
    }  # fmt: skip
    assert any(w.startswith("cloud:") for w in created["warnings"])
    listed = api.get(SVC).json()
    assert "shapes" in [s["name"] for s in listed["services"]]
    json.dumps(listed)
    api.delete(f"{SVC}/local/shapes")


def test_gateway_is_restarted_when_it_dies(server: Server) -> None:
    info = json.loads((server.data_dir / "server.json").read_text())
    (old,) = info["gateway_pids"]
    assert httpx.get(server.internet + "/api/predict/none").status_code == 404
    os.kill(old, signal.SIGKILL)

    def serving_again() -> bool:
        new = json.loads((server.data_dir / "server.json").read_text())["gateway_pids"]
        if not new or new == [old]:
            return False
        return httpx.get(server.vpc + "/api/predict/none", timeout=2).status_code == 404

    wait_for(serving_again, timeout=15, what="a new gateway serving")
    assert "gateway shared exited (killed by signal 9)" in server.log()


def test_failing_liveness_check_restarts_the_instance(api: httpx.Client, tmp_path: Path) -> None:
    spec = app_spec(
        tmp_path,
        "unlively",
        liveness_check={"http_get": {"path": "/missing"}, "period_seconds": 0.2, "failure_threshold": 2},
    )
    assert api.post(SVC, json=spec).status_code == 201

    def restarted() -> dict[str, Any] | None:
        rows = api.get(f"{SVC}/local/unlively/instances").json()["instances"]
        return rows[0] if rows and rows[0]["restarts"] >= 1 else None

    wait_for(restarted, timeout=10, what="a restart after liveness failures")
    log = "\n".join(api.get(f"{SVC}/local/unlively/logs").json()["logs"][0]["lines"])
    assert "GET /missing" in log and "killed by SIGTERM" in log
    api.delete(f"{SVC}/local/unlively")
