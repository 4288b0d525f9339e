"""Service groups at the gateway (split by weight, member paths, group token) and VPC discovery."""

from __future__ import annotations

import collections
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from openeas.gateway.groups import GroupRoute, SmoothWeightedRR, check_weight, effective_weights
from openeas.gateway.routes import GroupEntry, RouteEntry, group_entries
from openeas.gateway.snapshot import ServiceRoute
from openeas.gateway.snapshot import Upstream as Up
from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    GatewayProc,
    Upstream,
    add_instance,
    add_service,
    make_registry,
    sdk_headers,
    start_gateway,
)

GROUP_TOKEN = "tok-Group-0123456789abcdefghij"
A_TOKEN = "tok-MemberA-0123456789abcdefgh"
B_TOKEN = "tok-MemberB-0123456789abcdefgh"
SOLO_TOKEN = "tok-Solo-0123456789abcdefghijk"


# -- pure logic ----------------------------------------------------------------------------
def test_smooth_wrr_is_exact_and_interleaved() -> None:
    rr = SmoothWeightedRR(["a", "b"], [90, 10])
    picks = [rr.pick() for _ in range(100)]
    assert collections.Counter(picks) == {"a": 90, "b": 10}
    # smooth: b's ten picks are spread out, never two in a row and never 90 a's in a row
    b_at = [i for i, p in enumerate(picks) if p == "b"]
    assert all(j - i >= 5 for i, j in itertools.pairwise(b_at))
    rr3 = SmoothWeightedRR(["x", "y", "z"], [5, 1, 1])
    assert [rr3.pick() for _ in range(7)] == ["x", "x", "y", "x", "z", "x", "x"]


def test_smooth_wrr_skips_zero_weights() -> None:
    assert SmoothWeightedRR(["a", "b"], [0, 0]).pick() is None
    assert SmoothWeightedRR([], []).pick() is None
    only = SmoothWeightedRR(["a", "b", "c"], [0, 3, -1])
    assert {only.pick() for _ in range(10)} == {"b"}


def test_effective_weights() -> None:
    members = [("a", 2), ("b", 1), ("c", 0), ("d", 3)]
    assert effective_weights("auto", {"a": 5}, members) == [2, 1, 0, 3]
    weights = {"a": 90, "b": -1, "c": 50}
    assert effective_weights("customized", weights, members) == [90, 0, 0, 100]  # d: default 100
    with pytest.raises(ValueError):
        check_weight(1001)
    with pytest.raises(ValueError):
        check_weight(-2)
    assert check_weight(-1) == -1


def test_registry_groups(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "reg")
    v0 = registry.version()
    g = registry.ensure_group("g1", "first")
    assert (g.name, g.token, g.traffic_mode, g.weights) == ("g1", "first", "auto", {})
    assert registry.ensure_group("g1", "second").token == "first"  # exists: unchanged
    g = registry.update_group("g1", traffic_mode="customized", weights={"x": 90, "y": 10})
    assert g.weights == {"x": 90, "y": 10} and g.traffic_mode == "customized"
    assert registry.version() > v0
    assert [r.name for r in registry.list_groups()] == ["g1"]
    registry.delete_group("g1")
    assert registry.list_groups() == []
    registry.close()


# -- through the gateway process -----------------------------------------------------------
@dataclass
class GroupStack:
    registry: Registry
    gateway: GatewayProc
    access_log: Path

    def url(self, name: str, sub: str = "/echo") -> str:
        return f"{self.gateway.internet}/api/predict/{name}{sub}"


@pytest.fixture(scope="module")
def gstack(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]
) -> Iterator[GroupStack]:
    a, b = upstreams
    data_dir = tmp_path_factory.mktemp("groups")
    registry = make_registry(data_dir)
    registry.put_gateway("shared", {"listen": {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}})
    add_service(registry, "ga", A_TOKEN, [a.port], extra={"metadata": {"group": "g"}})
    add_service(registry, "gb", B_TOKEN, [b.port], extra={"metadata": {"group": "g"}})
    add_service(registry, "solo", SOLO_TOKEN, [a.port, b.port])
    registry.ensure_group("g", GROUP_TOKEN)
    registry.update_group("g", traffic_mode="customized", weights={"ga": 90, "gb": 10})
    access_log = data_dir / "access.log"
    gateway = start_gateway(sqlite_url(data_dir), "shared", data_dir, "--access-log", str(access_log))
    try:
        yield GroupStack(registry, gateway, access_log)
    finally:
        rc = gateway.terminate()
        registry.close()
        assert rc == 0, gateway.stderr_text()
        stderr = gateway.stderr_text()
        for bad in ("Traceback", GROUP_TOKEN, A_TOKEN, B_TOKEN):
            assert bad not in stderr, stderr


def _names(session: requests.Session, url: str, n: int, token: str = GROUP_TOKEN) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        resp = session.get(url, headers={"Authorization": token}, timeout=10)
        assert resp.status_code == 200, resp.text
        out[resp.json()["name"]] += 1
    return out


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except AssertionError:  # a snapshot between two writes
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_group_splits_by_customized_weights(gstack: GroupStack) -> None:
    with requests.Session() as s:
        assert _names(s, gstack.url("g"), 200) == {"a": 180, "b": 20}
        # the sub-path and query are forwarded as for a service
        body = s.get(
            gstack.url("g", "/echo/x?q=1"), headers={"Authorization": GROUP_TOKEN}, timeout=10
        ).json()
        assert body["path"] == "/echo/x" and body["query"] == "q=1"


def test_access_log_names_the_member(gstack: GroupStack) -> None:
    with requests.Session() as s:
        for path in ("/api/predict/g.gb/echo?n=1", "/api/predict/ga/echo?n=2"):
            resp = s.get(gstack.gateway.internet + path, headers={"Authorization": GROUP_TOKEN}, timeout=10)
            assert resp.status_code in (200, 401)
    lines: list[dict[str, object]] = []

    def logged() -> bool:
        lines[:] = [json.loads(x) for x in gstack.access_log.read_text().splitlines()]
        return any(x["service"] == "ga" for x in lines)

    _wait(logged, "the access log flush")
    member_line = [x for x in lines if x["service"] == "g.gb"][-1]
    assert member_line["member"] == "gb" and member_line["path"] == "/echo"
    group_lines = [x for x in lines if x["service"] == "g" and x["status"] == 200]
    assert group_lines and all(x["member"] in ("ga", "gb") for x in group_lines)
    assert all("member" not in x for x in lines if x["service"] == "ga")


def test_group_token_rules(gstack: GroupStack) -> None:
    with requests.Session() as s:
        # the group path takes the group token only
        assert s.get(gstack.url("g"), timeout=10).status_code == 401
        assert s.get(gstack.url("g"), headers={"Authorization": A_TOKEN}, timeout=10).status_code == 401
        assert s.get(gstack.url("g"), headers={"Authorization": f"Bearer {GROUP_TOKEN}"}, timeout=10).ok
        # the SDK's signed form, resource /api/predict/g
        signed = sdk_headers(GROUP_TOKEN, "g", b"{}")
        assert s.post(gstack.url("g", ""), data=b"{}", headers=signed, timeout=10).status_code != 401
        # a member path takes the group token or that member's token
        for token in (GROUP_TOKEN, A_TOKEN):
            assert _names(s, gstack.url("g.ga"), 5, token) == {"a": 5}
        for token in (GROUP_TOKEN, B_TOKEN):
            assert _names(s, gstack.url("g.gb"), 5, token) == {"b": 5}
        assert s.get(gstack.url("g.ga"), headers={"Authorization": B_TOKEN}, timeout=10).status_code == 401
        # members keep their own endpoints
        assert _names(s, gstack.url("ga"), 3, A_TOKEN) == {"a": 3}
        assert s.get(gstack.url("ga"), headers={"Authorization": GROUP_TOKEN}, timeout=10).status_code == 401
        # unknown group / member: 404 as an unknown service
        for name in ("nogroup", "g.nosuch", "solo.ga"):
            resp = s.get(gstack.url(name), headers={"Authorization": GROUP_TOKEN}, timeout=10)
            assert resp.status_code == 404 and resp.json()["code"] == 404


def test_weight_changes_apply_live(gstack: GroupStack) -> None:
    reg = gstack.registry
    with requests.Session() as s:
        reg.update_group("g", weights={"ga": 0, "gb": 10})
        _wait(lambda: _names(s, gstack.url("g"), 4) == {"b": 4}, "ga at weight 0")
        reg.update_group("g", weights={"ga": -1, "gb": 0})
        auth = {"Authorization": GROUP_TOKEN}
        _wait(lambda: s.get(gstack.url("g"), headers=auth, timeout=10).status_code == 503, "503")
        resp = s.get(gstack.url("g"), headers={"Authorization": GROUP_TOKEN}, timeout=10)
        assert "group 'g'" in resp.json()["message"]
        # a member at weight -1 is still reachable on its member path
        assert _names(s, gstack.url("g.ga"), 2) == {"a": 2}
        # auto: by ready instances (gb gets a second instance: 1:2)
        add_instance(reg, "gb", "gb-extra", gstack_b_port(s, gstack))
        reg.update_group("g", traffic_mode="auto", weights={})
        _wait(lambda: _names(s, gstack.url("g"), 30) == {"a": 10, "b": 20}, "auto weights 1:2")
        reg.delete_instance("gb-extra")
        reg.update_group("g", traffic_mode="customized", weights={"ga": 90, "gb": 10})
        _wait(lambda: _names(s, gstack.url("g"), 10) == {"a": 9, "b": 1}, "90/10 again")


def gstack_b_port(s: requests.Session, gstack: GroupStack) -> int:
    items = s.get(f"{gstack.gateway.intranet}/api/v1/servicediscovery/upstreams/gb", timeout=10).json()
    return int(items["endpoints"]["items"][0]["port"])


def test_member_without_ready_instance_gets_no_group_traffic(gstack: GroupStack) -> None:
    reg = gstack.registry
    with requests.Session() as s:
        port = gstack_b_port(s, gstack)
        add_instance(reg, "gb", "gb-0", port, state="unready")
        _wait(lambda: _names(s, gstack.url("g"), 10) == {"a": 10}, "gb out of the split")
        resp = s.get(gstack.url("g.gb"), headers={"Authorization": GROUP_TOKEN}, timeout=10)
        assert resp.status_code == 503
        add_instance(reg, "gb", "gb-0", port)
        _wait(lambda: _names(s, gstack.url("g"), 10) == {"a": 9, "b": 1}, "gb back")


def test_discovery_on_the_intranet_listener_only(
    gstack: GroupStack, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = upstreams
    intranet, internet = gstack.gateway.intranet, gstack.gateway.internet
    for path in (
        "/api/v1/servicediscovery/upstreams/solo",
        "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/solo",
    ):
        resp = requests.get(intranet + path, timeout=10)  # no token needed
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"] == "application/json"
        body = resp.json()
        assert body["correlative"] == ["solo"]
        items = sorted(body["endpoints"]["items"], key=lambda i: i["port"])
        want = sorted([a.port, b.port])
        assert items == [{"app": "solo", "ip": "127.0.0.1", "port": p, "weight": 100} for p in want]
        # the Internet listener does not serve it
        resp = requests.get(internet + path, timeout=10)
        assert resp.status_code == 404 and "not found" in resp.json()["reason"].lower()
    resp = requests.get(intranet + "/api/v1/servicediscovery/upstreams/nosuch", timeout=10)
    assert resp.status_code == 404 and "nosuch" in resp.json()["message"]
    # the older prefix with a query string (the SDK appends ?internal=true inside a cluster)
    resp = requests.get(intranet + "/api/v1/servicediscovery/upstreams/solo?internal=true", timeout=10)
    assert resp.status_code == 200 and resp.json()["correlative"] == ["solo"]


def test_rotation_survives_snapshot_swaps() -> None:
    """A busy store swaps the snapshot often: the split must hold across swaps."""
    ups = (Up("i1", "127.0.0.1", 1),)
    services = {n: ServiceRoute(n, b"t", ups, 5.0, "Running", group="g") for n in ("big", "small")}
    group = GroupRoute("g", b"tok", "customized", {"big": 90, "small": 10}, ("big", "small"))
    seen: collections.Counter[str] = collections.Counter()
    groups: dict[bytes, GroupEntry] = {}
    for _ in range(100):  # a new snapshot every 3 requests
        routes = {n.encode(): RouteEntry(r, []) for n, r in services.items()}
        for entry in routes.values():
            entry.upstreams = [object()]  # type: ignore[list-item]  # one "ready instance"
        groups = group_entries({"g": group}, routes, groups)
        for _ in range(3):
            member = groups[b"g"].pick()
            assert member is not None
            seen[member.name] += 1
    assert seen == {"big": 270, "small": 30}
