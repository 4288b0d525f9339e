"""`openeas versions` / `openeas rollback` and the API behind them: input errors, what makes a
version and what does not."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Server, app_spec


def test_versions_rollback_and_bad_input(server: Server, tmp_path: Path) -> None:
    spec = app_spec(tmp_path, "vsvc", env=[{"name": "WHO", "value": "one"}])
    (tmp_path / "svc.json").write_text(json.dumps(spec))
    server.cli_json("create", str(tmp_path / "svc.json"), "--wait")
    server.cli("modify", "vsvc", "-D", "labels.team=ml", "--wait")  # a spec change: version 2
    server.cli("scale", "vsvc", "2", "--wait")  # the instance count alone: no version
    server.cli("stop", "vsvc")
    server.cli("start", "vsvc", "--wait")  # start/stop: no version
    out = server.cli_json("versions", "vsvc")
    notes = [(v["version"], v["note"]) for v in out["versions"]]
    assert notes == [(1, "created"), (2, "changed labels.team")]
    assert out["versions"][1]["spec"]["labels"] == {"team": "ml"}

    rolled = server.cli_json("rollback", "vsvc", "1", "--wait")
    assert not rolled["spec"].get("labels") and rolled["instance"] == 2
    out = server.cli_json("versions", "vsvc")
    assert [v["note"] for v in out["versions"]] == ["created", "changed labels.team", "rollback to version 1"]
    assert [v["current"] for v in out["versions"]] == [False, False, True]
    # rolling back to what runs now changes nothing and makes no version
    server.cli_json("rollback", "vsvc", "3")
    assert len(server.cli_json("versions", "vsvc")["versions"]) == 3

    with server.client() as api:
        path = "/api/v2/services/local/vsvc/version"
        for body in ({"version": "1"}, {"version": True}, {"version": 1, "x": 2}, []):
            r = api.put(path, json=body)
            assert r.status_code == 400 and r.json()["code"] == "InvalidRequest", body
            assert 'send {"version": N}' in r.json()["message"]
        r = api.put(path, json={"version": 7})
        assert r.status_code == 404 and r.json()["code"] == "VersionNotFound"
        assert r.json()["versions"] == [1, 2, 3] and "1, 2, 3" in r.json()["message"]
        r = api.get("/api/v2/services/local/nope/versions")
        assert r.status_code == 404 and r.json()["code"] == "ServiceNotFound"
    with server.client(token="wrong") as api:
        assert api.get("/api/v2/services/local/vsvc/versions").status_code == 401

    bad = server.cli("rollback", "vsvc", "7", check=False)
    assert bad.returncode == 1 and "has no version 7; its versions are 1, 2, 3" in bad.stdout + bad.stderr
    server.cli("delete", "vsvc")
