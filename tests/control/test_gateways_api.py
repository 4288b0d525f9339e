"""/api/v2/gateways through a real `openeas server`: validation, the shared gateway read-only,
binding services, what restarts a gateway and what does not, Failed with the reason, restarts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Server, app_spec, pid_alive, serving, start_server, wait_for

GWS = "/api/v2/gateways"
SVC = "/api/v2/services"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory.mktemp("gateways") / "data")


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gw_view(api: httpx.Client, name: str) -> dict[str, Any]:
    resp = api.get(f"{GWS}/local/{name}")
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def running(api: httpx.Client, name: str, timeout: float = 20) -> dict[str, Any]:
    out: dict[str, Any] = wait_for(
        lambda: (v := gw_view(api, name))["status"] == "Running" and v["pids"] and v,
        timeout,
        f"gateway {name} Running",
    )
    return out


def problems(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "InvalidSpec"
    return {p["field"]: p["problem"] for p in body["problems"]}


def intranet_only(name: str, port: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "listen": {"intranet": f"127.0.0.1:{port}"}, **extra}


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_shared_gateway_is_listed_and_read_only(server: Server, api: httpx.Client) -> None:
    listed = api.get(GWS).json()
    assert listed["total"] >= 1
    shared = next(g for g in listed["gateways"] if g["name"] == "shared")
    assert shared["type"] == "shared" and shared["status"] == "Running"
    assert shared["endpoints"] == {"internet": server.internet, "intranet": server.vpc}
    assert shared["spec"]["max_body_bytes"] == 1024 * 1024 and shared["spec"]["rate_limit"] == 1000
    assert shared["pids"] and "--name shared" in cmdline(shared["pids"][0])
    for method in ("PUT", "DELETE"):
        body = {"assignments": ["rate_limit=5"]} if method == "PUT" else None
        resp = api.request(method, f"{GWS}/local/shared", json=body)
        assert resp.status_code == 409 and resp.json()["code"] == "SharedGatewayReadOnly"
        assert "openeas server" in resp.json()["message"]
    fields = problems(api.post(GWS, json=intranet_only("shared")))
    assert "shared gateway" in fields["name"]


def test_invalid_gateway_specs_name_the_fields(server: Server, api: httpx.Client) -> None:
    fields = problems(
        api.post(
            GWS,
            json=intranet_only("bad", colour="red", intranet_acl=[{"entry": "10.0.0/33"}], rate_limit=-1),
        )
    )
    assert {"colour", "intranet_acl[0].entry", "rate_limit"} <= set(fields)
    fields = problems(api.post(GWS, json={"name": "bad", "enable_internet": True}))
    assert "listen.internet" in fields["(top level)"]
    # a port another gateway listens on (the shared gateway's Internet port)
    taken = int(server.internet.rsplit(":", 1)[1])
    fields = problems(api.post(GWS, json=intranet_only("bad", taken)))
    assert "gateway 'shared'" in fields["listen.intranet"]
    fields = problems(api.post(GWS, json=intranet_only("bad", advertise={"wan": "http://x"})))
    assert "advertise.wan" in fields
    assert api.post(GWS, json=["not", "an", "object"]).status_code == 400
    resp = api.post(GWS, content=b"{", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["code"] == "InvalidJSON"
    resp = api.get(f"{GWS}/local/nope")
    assert resp.status_code == 404 and resp.json()["code"] == "GatewayNotFound"
    resp = api.get(f"{GWS}/cn-shanghai/shared")
    assert resp.status_code == 404 and "/gateways/local/" in resp.json()["message"]
    with server.client(token="") as anonymous:
        assert anonymous.get(GWS).status_code == 401
        assert anonymous.post(GWS, json=intranet_only("x")).status_code == 401
    assert "bad" not in [g["name"] for g in api.get(GWS).json()["gateways"]]


def test_bind_a_service_move_it_and_delete_the_gateway(
    server: Server, api: httpx.Client, tmp_path: Path
) -> None:
    resp = api.post(GWS, json=intranet_only("gw-a"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "Creating" and resp.json()["type"] == "dedicated"
    gw = running(api, "gw-a")
    assert gw["endpoints"]["internet"] is None  # EAS default: Internet access off
    assert gw["endpoints"]["intranet"] == f"http://{gw['listeners']['intranet']}"
    assert "--name gw-a" in cmdline(gw["pids"][0])
    resp = api.post(GWS, json=intranet_only("gw-a"))
    assert resp.status_code == 409 and resp.json()["code"] == "GatewayAlreadyExists"

    # services: the gateway must exist, and no scale from zero on a dedicated gateway
    spec = app_spec(tmp_path, "on_a")
    spec["networking"] = {"gateway": "gw-missing"}
    fields = problems(api.post(SVC, json=spec))
    assert "gw-a" in fields["networking.gateway"] and "shared" in fields["networking.gateway"]
    spec["networking"] = {"gateway": "gw-a"}
    spec["metadata"]["instance"] = 0
    assert "scale to zero" in problems(api.post(SVC, json=spec))["metadata.instance"]
    spec["metadata"]["instance"] = 1
    created = api.post(SVC, json=spec)
    assert created.status_code == 201, created.text
    svc = created.json()
    assert svc["gateway"] == "gw-a"
    assert svc["endpoints"] == {"internet": None, "vpc": f"{gw['endpoints']['intranet']}/api/predict/on_a"}
    assert api.get(f"{SVC}/local/on_a/endpoints").json()["endpoints"] == svc["endpoints"]
    token = svc["token"]

    def call(url: str) -> httpx.Response:
        return httpx.get(url + "/pid", headers={"Authorization": token}, timeout=10)

    wait_for(lambda: call(svc["endpoints"]["vpc"]).status_code == 200, 20, "on_a served by gw-a")
    pid = call(svc["endpoints"]["vpc"]).json()["pid"]
    assert call(f"{server.internet}/api/predict/on_a").status_code == 404
    resp = api.post(f"{SVC}/local/on_a/scale", json={"instance": 0})
    assert "metadata.instance" in problems(resp)
    assert gw_view(api, "gw-a")["services"] == ["on_a"]

    # the gateway cannot go while it serves on_a
    resp = api.delete(f"{GWS}/local/gw-a")
    assert resp.status_code == 409 and resp.json()["code"] == "GatewayInUse"
    assert resp.json()["services"] == ["on_a"] and "on_a" in resp.json()["message"]

    # move to the shared gateway: no new instance, the old gateway stops serving it
    moved = api.put(f"{SVC}/local/on_a", json={"assignments": ["networking.gateway=shared"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["endpoints"]["internet"] == f"{server.internet}/api/predict/on_a"
    wait_for(lambda: call(f"{server.internet}/api/predict/on_a").status_code == 200, 10, "served by shared")
    assert call(f"{server.internet}/api/predict/on_a").json()["pid"] == pid
    wait_for(lambda: call(svc["endpoints"]["vpc"]).status_code == 404, 10, "gw-a no longer serving it")

    pids = gw_view(api, "gw-a")["pids"]
    assert api.delete(f"{GWS}/local/gw-a").json() == {"name": "gw-a", "deleted": True}
    assert not any(pid_alive(p) for p in pids)
    assert api.get(f"{GWS}/local/gw-a").status_code == 404
    # a service cannot name it any more
    assert "networking.gateway" in problems(
        api.put(f"{SVC}/local/on_a", json={"assignments": ["networking.gateway=gw-a"]})
    )
    api.delete(f"{SVC}/local/on_a")


def test_what_restarts_a_gateway_and_what_does_not(api: httpx.Client) -> None:
    port = free_port()
    assert api.post(GWS, json=intranet_only("gw-b", rate_limit=10)).status_code == 201
    first = running(api, "gw-b")
    # limits, allow-lists, advertise: the same process picks them up
    resp = api.put(
        f"{GWS}/local/gw-b",
        json={
            "spec": {"intranet_acl": [{"entry": "10.0.0.0/8", "comment": "vpc"}]},
            "assignments": [
                "rate_limit=20",
                "max_body_bytes=2097152",
                "advertise.intranet=http://gw-b.vpc:80",
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert view["spec"]["rate_limit"] == 20 and view["spec"]["intranet_acl"][0]["entry"] == "10.0.0.0/8"
    assert view["endpoints"]["intranet"] == "http://gw-b.vpc:80"
    assert view["status"] == "Running" and view["pids"] == first["pids"]
    # an invalid change is refused and changes nothing
    assert "workers" in problems(api.put(f"{GWS}/local/gw-b", json={"assignments": ["workers=0"]}))
    assert "name" in problems(api.put(f"{GWS}/local/gw-b", json={"spec": {"name": "gw-c"}}))
    assert api.put(f"{GWS}/local/gw-b", json={"nope": 1}).status_code == 400
    # a listener change restarts it on the new port
    resp = api.put(f"{GWS}/local/gw-b", json={"assignments": [f"listen.intranet=127.0.0.1:{port}"]})
    assert resp.status_code == 200 and resp.json()["status"] == "Creating"
    assert "listen changed" in resp.json()["message"]
    second = running(api, "gw-b")
    assert second["pids"] != first["pids"] and not pid_alive(first["pids"][0])
    assert second["listeners"] == {"intranet": f"127.0.0.1:{port}"}
    # workers: a parent and two workers on the same port
    api.put(f"{GWS}/local/gw-b", json={"assignments": ["workers=2"]})
    third = wait_for(lambda: (v := running(api, "gw-b"))["pids"] != second["pids"] and v, 20, "restart")
    group = wait_for(lambda: len(p := gw_view(api, "gw-b")["pids"]) == 3 and p, 10, "two workers")
    assert "--workers 2" in cmdline(third["pids"][0])
    assert api.delete(f"{GWS}/local/gw-b").status_code == 200
    assert not any(pid_alive(p) for p in group)  # the workers too


def test_a_taken_port_is_failed_with_the_reason_then_recovers(api: httpx.Client) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        assert api.post(GWS, json=intranet_only("gw-busy", port)).status_code == 201
        failed = wait_for(
            lambda: (v := gw_view(api, "gw-busy"))["status"] == "Failed" and v, 20, "gateway Failed"
        )
        assert "cannot listen on" in failed["message"] and str(port) in failed["message"], failed
        assert "restarting in" in failed["message"]
    finally:
        blocker.close()
    recovered = running(api, "gw-busy", timeout=30)  # retried with backoff: 1 s, 2 s, 4 s ...
    assert recovered["listeners"] == {"intranet": f"127.0.0.1:{port}"} and recovered["message"] == ""
    assert api.delete(f"{GWS}/local/gw-busy").status_code == 200


def test_gateways_come_back_with_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = start_server(data_dir)
    try:
        with srv.client() as api:
            assert api.post(GWS, json=intranet_only("gw-keep")).status_code == 201
            before = running(api, "gw-keep")
    finally:
        assert srv.stop() == 0, srv.log()
    assert not pid_alive(before["pids"][0])  # stopped with the server
    srv = start_server(data_dir)
    try:
        with srv.client() as api:
            after = running(api, "gw-keep")
            assert after["pids"] != before["pids"]
            names = [g["name"] for g in api.get(GWS).json()["gateways"]]
            assert names == ["gw-keep", "shared"]
    finally:
        assert srv.stop() == 0, srv.log()
    assert not any(pid_alive(p) for p in after["pids"])
