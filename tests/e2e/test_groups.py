"""Service groups through the real server and CLI: a 90/10 split over 2,000 requests, member
paths, the group token, a member's own endpoint, weight validation."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import Server, app_command, service_spec

GROUP = "tgroup"
A, B = "tg_a", "tg_b"


@pytest.fixture(scope="module")
def members(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("groups")
    out = {}
    for name in (A, B):
        out[name] = server.deploy(service_spec(name, app_command("whoami.py"), group=GROUP), work)
    return out


def _group(server: Server) -> dict[str, Any]:
    view: dict[str, Any] = server.cli_json("group", "desc", GROUP)
    return view


def _count(session: requests.Session, url: str, token: str, n: int) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        resp = session.post(url, data=b"{}", headers={"Authorization": token}, timeout=10)
        assert resp.status_code == 200, resp.text
        seen[resp.json()["service"]] += 1
    return seen


def test_group_is_created_with_its_members(server: Server, members: dict[str, Any]) -> None:
    groups = server.cli_json("group", "list")
    [group] = [g for g in groups if g["name"] == GROUP]
    assert [m["name"] for m in group["members"]] == [A, B]
    assert group["traffic_mode"] == "auto"
    assert group["token"] and group["token"] not in (members[A]["token"], members[B]["token"])
    assert group["endpoints"]["internet"].endswith(f"/api/predict/{GROUP}")
    assert group["endpoints"]["vpc"].endswith(f"/api/predict/{GROUP}")
    assert all(m["ready_instances"] == 1 and m["share"] == 50.0 for m in group["members"])
    text = server.cli("group", "desc", GROUP).stdout
    assert GROUP in text and A in text and f"{GROUP}.{B}" in text


def test_ninety_ten_split_over_2000_requests(server: Server, members: dict[str, Any]) -> None:
    view = server.cli_json(
        "group",
        "modify",
        GROUP,
        "-D",
        "traffic_mode=customized",
        "-D",
        f"weights.{A}=90",
        "-D",
        f"weights.{B}=10",
    )
    assert view["traffic_mode"] == "customized"
    assert {m["name"]: m["share"] for m in view["members"]} == {A: 90.0, B: 10.0}
    url, token = view["endpoints"]["internet"], view["token"]
    with requests.Session() as s:
        # the gateway reads the change from the store within ~100 ms
        deadline = time.monotonic() + 10
        while _count(s, url, token, 10) != {A: 9, B: 1} and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = _count(s, url, token, 2000)
    share_a = 100.0 * seen[A] / 2000
    assert abs(share_a - 90.0) <= 3.0, seen
    assert seen[A] + seen[B] == 2000


def test_member_paths_tokens_and_own_endpoints(server: Server, members: dict[str, Any]) -> None:
    view = _group(server)
    group_url, group_token = view["endpoints"]["internet"], view["token"]
    with requests.Session() as s:
        # <group>.<service> reaches that member, with the group token or the member's own
        for name in (A, B):
            member_url = group_url.replace(f"/api/predict/{GROUP}", f"/api/predict/{GROUP}.{name}")
            for token in (group_token, members[name]["token"]):
                assert _count(s, member_url, token, 5) == {name: 5}
        # the group path takes the group token only
        resp = s.post(group_url, headers={"Authorization": members[A]["token"]}, timeout=10)
        assert resp.status_code == 401
        assert s.post(group_url, timeout=10).status_code == 401
        # the group's VPC endpoint works too
        assert sum(_count(s, view["endpoints"]["vpc"], group_token, 10).values()) == 10
        # each member's own endpoint still works, with its own token (not the group's)
        for name in (A, B):
            own = members[name]["endpoints"]["internet"]
            assert _count(s, own, members[name]["token"], 3) == {name: 3}
            assert s.post(own, headers={"Authorization": group_token}, timeout=10).status_code == 401


def test_weights_are_validated(server: Server, members: dict[str, Any]) -> None:
    for bad, words in (
        (f"weights.{A}=1001", ("-1", "1000")),
        ("weights.not_a_member=5", ("not a member",)),
        ("traffic_mode=sometimes", ("auto", "customized")),
    ):
        result = server.cli("group", "modify", GROUP, "-D", bad, check=False)
        assert result.returncode == 1, result.stdout
        for word in words:
            assert word in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    result = server.cli("group", "desc", "no_such_group", check=False)
    assert result.returncode == 1 and "no_such_group" in result.stderr
    # -1 takes a member out of group traffic; auto goes back to instance counts
    view = server.cli_json("group", "modify", GROUP, "-D", f"weights.{B}=-1")
    assert {m["name"]: m["share"] for m in view["members"]} == {A: 100.0, B: 0.0}
    view = server.cli_json("group", "modify", GROUP, "-D", "traffic_mode=auto")
    assert {m["name"]: m["share"] for m in view["members"]} == {A: 50.0, B: 50.0}


def test_group_token_can_be_rotated(server: Server, members: dict[str, Any], tmp_path: Path) -> None:
    old = _group(server)
    view = server.cli_json("group", "modify", GROUP, "-D", "token=null")
    assert view["token"] != old["token"]
    url = view["endpoints"]["internet"]
    server.wait_for(
        lambda: requests.post(url, headers={"Authorization": view["token"]}, timeout=10).status_code == 200,
        what="new group token accepted",
    )
    assert requests.post(url, headers={"Authorization": old["token"]}, timeout=10).status_code == 401
