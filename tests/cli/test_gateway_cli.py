"""`openeas gateway create|list|desc|modify|delete` against a real server, with and without --json,
and the errors a user can make; `openeas endpoints` of a service on an intranet-only gateway."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.harness import Server, app_spec


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_gateway_commands_with_json_and_text(server: Server, tmp_path: Path) -> None:
    spec = write(tmp_path / "gw.json", {"name": "gw-cli", "listen": {"intranet": "127.0.0.1:0"}})
    created = server.cli_json("gateway", "create", str(spec), "--wait")
    assert created["name"] == "gw-cli" and created["status"] == "Running" and created["pids"]
    assert created["endpoints"]["internet"] is None and created["endpoints"]["intranet"]

    listed = server.cli_json("gateway", "list")
    assert [g["name"] for g in listed] == ["gw-cli", "shared"]
    table = server.cli("gateway", "list").stdout
    assert "gw-cli" in table and "dedicated" in table and "shared" in table and "Running" in table

    text = server.cli("gateway", "desc", "gw-cli").stdout
    for words in (
        "gw-cli (dedicated)",
        "Running",
        "- (Internet access off)",
        created["endpoints"]["intranet"],
    ):
        assert words in text, text
    assert "Rate limit" in text and "none" in text
    shared = server.cli("gateway", "desc", "shared").stdout
    assert "1000 QPS per service, 10000 QPS per group" in shared and "1048576 bytes" in shared

    # a service on it: the endpoints command prints only the VPC endpoint
    svc_spec = app_spec(tmp_path, "cli_on_gw")
    svc_spec["networking"] = {"gateway": "gw-cli"}
    svc = server.cli_json("create", str(write(tmp_path / "svc.json", svc_spec)), "--wait")
    assert svc["endpoints"]["internet"] is None
    endpoints = server.cli("endpoints", "cli_on_gw").stdout
    assert "VPC endpoint" in endpoints and "Internet endpoint" not in endpoints and svc["token"] in endpoints
    desc = server.cli("desc", "cli_on_gw").stdout
    assert "Internet access is off on gateway gw-cli" in desc
    r = httpx.get(svc["endpoints"]["vpc"] + "/pid", headers={"Authorization": svc["token"]}, timeout=10)
    assert r.status_code == 200

    # modify: -D and -s, live (same pid)
    patch = write(tmp_path / "patch.json", {"intranet_acl": [{"entry": "127.0.0.0/8", "comment": "me"}]})
    changed = server.cli_json("gateway", "modify", "gw-cli", "-D", "rate_limit=50", "-s", str(patch))
    assert changed["spec"]["rate_limit"] == 50 and changed["spec"]["intranet_acl"][0]["comment"] == "me"
    assert changed["pids"] == created["pids"]
    text = server.cli("gateway", "desc", "gw-cli").stdout
    assert "50 QPS per service" in text and "127.0.0.0/8 (me)" in text

    # delete: refused while cli_on_gw is bound, then done
    refused = server.cli("gateway", "delete", "gw-cli", check=False)
    assert (
        refused.returncode == 1 and "cli_on_gw" in refused.stderr and "networking.gateway" in refused.stderr
    )
    server.cli_json("delete", "cli_on_gw")
    assert server.cli_json("gateway", "delete", "gw-cli") == {"name": "gw-cli", "deleted": True}
    assert [g["name"] for g in server.cli_json("gateway", "list")] == ["shared"]


def test_gateway_user_errors_are_one_clear_message(server: Server, tmp_path: Path) -> None:
    def fails(*args: str) -> str:
        result = server.cli(*args, check=False)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result.stderr

    assert "no such file" in fails("gateway", "create", str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{")
    assert "not valid JSON" in fails("gateway", "create", str(tmp_path / "broken.json"))
    assert "JSON object" in fails("gateway", "create", str(write(tmp_path / "list.json", [1])))
    bad = write(tmp_path / "bad.json", {"name": "gw-bad", "listen": {"intranet": "nope"}, "colour": 1})
    err = fails("gateway", "create", str(bad))
    assert "the spec is not valid" in err and "listen.intranet" in err and "colour" in err
    assert "no gateway named 'nope'" in fails("gateway", "desc", "nope")
    assert "openeas server" in fails("gateway", "delete", "shared")
    assert "cannot be modified" in fails("gateway", "modify", "shared", "-D", "rate_limit=1")
    assert "nothing to change" in fails("gateway", "modify", "shared")
    assert "-D" in fails("gateway", "modify", "shared", "-D", "novalue")
    # --json: the server's error as JSON on stdout, the message on stderr
    result = server.cli("gateway", "desc", "nope", "--json", check=False)
    assert result.returncode == 1 and json.loads(result.stdout)["error"]["code"] == "GatewayNotFound"
    # a service naming a gateway that does not exist: the gateways are listed
    svc = app_spec(tmp_path, "lost")
    svc["networking"] = {"gateway": "gw-nowhere"}
    err = fails("create", str(write(tmp_path / "lost.json", svc)))
    assert "networking.gateway" in err and "gateways: shared" in err
