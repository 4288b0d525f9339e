"""`openeas keys create|list|revoke` against a real server, and how the secrets are kept.

The secret is printed once and never again (not by `list`, not in the server log); it is not
in the registry database in clear; the encryption key file is mode 0600; a revoked key is gone;
AccessKeys are managed with the admin token only (an AccessKey signature or a wrong token gets
401); the admin Bearer token keeps working on openeas's own routes.
"""

from __future__ import annotations

import stat

import httpx

from tests.harness import Server


def test_create_list_revoke(server: Server) -> None:
    text = server.cli("keys", "create", "--description", "ci pipeline").stdout
    assert "AccessKey ID" in text and "not shown again" in text
    full = server.cli_json("keys", "create")
    read_only = server.cli_json("keys", "create", "--read-only")
    assert full["id"].startswith("OEAK") and len(full["secret"]) == 30 and full["read_only"] is False
    assert read_only["read_only"] is True and read_only["secret"] != full["secret"]

    listed = server.cli_json("keys", "list")
    assert {k["id"] for k in listed} >= {full["id"], read_only["id"]}
    assert all("secret" not in k for k in listed)
    assert next(k for k in listed if k["description"] == "ci pipeline")["read_only"] is False
    table = server.cli("keys", "list").stdout
    assert read_only["id"] in table and "read-only" in table and full["secret"] not in table

    db = (server.data_dir / "registry.db").read_bytes()
    for wal in server.data_dir.glob("registry.db-wal"):
        db += wal.read_bytes()
    assert full["secret"].encode() not in db and read_only["secret"].encode() not in db
    key_file = server.data_dir / "access_keys.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    assert server.cli_json("keys", "revoke", read_only["id"]) == {"id": read_only["id"], "revoked": True}
    assert read_only["id"] not in {k["id"] for k in server.cli_json("keys", "list")}
    again = server.cli("keys", "revoke", read_only["id"], check=False)
    assert again.returncode == 1 and "no AccessKey" in again.stderr

    log = server.log()
    assert full["secret"] not in log and read_only["secret"] not in log


def test_keys_need_the_admin_token(server: Server) -> None:
    with httpx.Client(base_url=server.api, timeout=10) as anon:
        assert anon.get("/api/v2/accesskeys").status_code == 401
        wrong = anon.post("/api/v2/accesskeys", headers={"Authorization": "Bearer nope"}, json={})
        assert wrong.status_code == 401 and wrong.json()["code"] == "Unauthorized"
        signed_like = {"Authorization": "ACS3-HMAC-SHA256 Credential=OEAKX,SignedHeaders=host,Signature=00"}
        assert anon.get("/api/v2/accesskeys", headers=signed_like).status_code == 401
    with server.client() as admin:
        bad = admin.post("/api/v2/accesskeys", json={"read_only": "yes"})
        assert bad.status_code == 400 and "read_only" in bad.json()["message"]
        # the admin token keeps working on openeas's own routes, in openeas's own shape
        assert "services" in admin.get("/api/v2/services").json()
