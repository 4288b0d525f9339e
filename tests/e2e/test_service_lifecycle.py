"""Lifecycle through the real CLI: bad specs refused whole, modify (-D and -s), scale, token
change, delete; every step checked through the gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from tests.harness import Server, app_command, service_spec


def _names(server: Server) -> list[str]:
    return [s["name"] for s in server.cli_json("list")]


def test_bad_spec_names_the_field_and_writes_nothing(server: Server, work: Path) -> None:
    before = _names(server)
    bad = service_spec("typo_svc", app_command("misbehaving.py"))
    bad["metadata"]["instanc"] = 2
    bad["containers"][0]["port"] = 8080
    path = work / "bad.json"
    path.write_text(json.dumps(bad))
    result = server.cli("create", str(path), check=False)
    assert result.returncode == 1
    said = result.stdout + result.stderr
    assert "metadata.instanc" in said and "unknown field" in said
    assert "containers[0].port" in said and "reserved" in said
    assert "Traceback" not in said
    assert _names(server) == before

    path.write_text("{not json")
    result = server.cli("create", str(path), check=False)
    assert result.returncode == 1 and "JSON" in (result.stdout + result.stderr)
    assert "Traceback" not in result.stdout + result.stderr

    unknown = service_spec("proc_svc", "true")
    del unknown["containers"]
    unknown["processor"] = "no_such_processor"
    unknown["model_path"] = "/tmp/x"
    path.write_text(json.dumps(unknown))
    result = server.cli("create", str(path), check=False)
    assert result.returncode == 1 and "no_such_processor" in (result.stdout + result.stderr)
    assert _names(server) == before


def test_modify_scale_token_delete(server: Server, work: Path) -> None:
    spec = service_spec("life", app_command("misbehaving.py"))
    created = server.deploy(spec, work)
    url = created["endpoints"]["internet"] + "/pid"
    old_token = created["token"]
    assert requests.get(url, headers={"Authorization": old_token}, timeout=10).status_code == 200

    # -D key=value: two instances, both get traffic.
    server.cli("modify", "life", "-D", "metadata.instance=2")
    server.wait_for(
        lambda: server.cli_json("desc", "life")["running_instances"] == 2, timeout=60, what="2 instances"
    )
    pids = {
        requests.get(url, headers={"Authorization": old_token}, timeout=10).json()["pid"] for _ in range(20)
    }
    assert len(pids) == 2

    # scale back down.
    server.cli("scale", "life", "1")
    server.wait_for(
        lambda: server.cli_json("desc", "life")["running_instances"] == 1, timeout=60, what="1 instance"
    )

    # A token change takes effect at the gateway: the old one is refused.
    new_token = "N3wT0ken-" + "z" * 30
    patch = work / "patch.json"
    patch.write_text(json.dumps({"token": new_token}))
    server.cli("modify", "life", "-s", str(patch))
    server.wait_for(
        lambda: requests.get(url, headers={"Authorization": new_token}, timeout=10).status_code == 200,
        what="new token accepted",
    )
    assert requests.get(url, headers={"Authorization": old_token}, timeout=10).status_code == 401
    assert server.cli_json("endpoints", "life")["token"] == new_token

    # An invalid modify is refused whole: the service keeps its spec.
    result = server.cli("modify", "life", "-D", "metadata.rpc.keepalive=-5", check=False)
    assert result.returncode == 1 and "metadata.rpc.keepalive" in (result.stdout + result.stderr)
    assert server.cli_json("desc", "life")["status"] == "Running"

    logs = server.cli("logs", "life").stdout
    assert "GET /pid" in logs

    server.cli("delete", "life")
    assert "life" not in _names(server)
    server.wait_for(
        lambda: requests.get(url, headers={"Authorization": new_token}, timeout=10).status_code == 404,
        what="404 after delete",
    )


def test_admin_api_needs_the_admin_token(server: Server) -> None:
    assert requests.get(server.api + "/api/v2/services", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(server.api + "/api/v2/services", headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": "Bearer " + server.admin_token}
    assert requests.get(server.api + "/api/v2/services", headers=right, timeout=10).status_code == 200


def test_server_log_has_no_service_token(server: Server) -> None:
    services: list[dict[str, Any]] = server.cli_json("list")
    log = server.log_path.read_text(errors="replace")
    for svc in services:
        token = server.cli_json("endpoints", svc["name"])["token"]
        assert token not in log
