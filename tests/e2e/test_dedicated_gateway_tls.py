"""HTTPS on a dedicated gateway: a self-signed certificate made here (cryptography), the gateway
created with the CLI from a spec with relative certificate paths, called with curl --cacert and
requests(verify=...), a custom domain through SNI (curl --resolve), and HTTP redirected (308)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_dedicated_gateway import fast_app_spec
from tests.gateway.harness import make_cert
from tests.harness import Server

GW = "gw-tls"
DOMAIN = "models.example.test"


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    make_cert(directory, ["localhost", "127.0.0.1", DOMAIN])
    return directory


@pytest.fixture(scope="module")
def gateway(server: Server, tls_dir: Path) -> dict[str, Any]:
    spec = {
        "name": GW,
        "enable_internet": True,
        "enable_intranet": False,
        "listen": {"internet": "127.0.0.1:0"},
        "tls": {"cert": "cert.pem", "key": "key.pem", "domains": [DOMAIN]},  # relative to the cwd
        "ssl_redirect": True,
    }
    (tls_dir / "gw.json").write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, "-m", "openeas", "gateway", "create", "gw.json", "--wait", "--json"],
        cwd=tls_dir, env=server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    view: dict[str, Any] = json.loads(out.stdout)
    return view


@pytest.fixture(scope="module")
def svc(server: Server, gateway: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("tlssvc")
    return server.deploy(fast_app_spec("secure", tmp, GW), tmp)


def test_the_cli_sent_absolute_paths_and_the_endpoint_is_https(
    gateway: dict[str, Any], svc: dict[str, Any], tls_dir: Path
) -> None:
    assert gateway["spec"]["tls"]["cert"] == str(tls_dir / "cert.pem")
    assert gateway["spec"]["tls"]["key"] == str(tls_dir / "key.pem")
    port = gateway["listeners"]["internet"].rsplit(":", 1)[1]
    assert gateway["endpoints"] == {"internet": f"https://127.0.0.1:{port}", "intranet": None}
    assert svc["endpoints"] == {"internet": f"https://127.0.0.1:{port}/api/predict/secure", "vpc": None}


def test_requests_and_curl_with_the_self_signed_certificate(svc: dict[str, Any], tls_dir: Path) -> None:
    url, token = svc["endpoints"]["internet"] + "/pid", svc["token"]
    cert = str(tls_dir / "cert.pem")
    resp = requests.get(url, headers={"Authorization": token}, verify=cert, timeout=10)
    assert resp.status_code == 200 and "pid" in resp.json()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, headers={"Authorization": token}, timeout=10)  # not trusted by default
    out = subprocess.run(
        ["curl", "-sS", "--cacert", cert, "-H", f"Authorization: {token}", url],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 0 and "pid" in json.loads(out.stdout), out.stderr


def test_custom_domain_by_sni(svc: dict[str, Any], tls_dir: Path) -> None:
    port = svc["endpoints"]["internet"].split(":")[2].split("/")[0]
    url = f"https://{DOMAIN}:{port}/api/predict/secure/pid"
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(tls_dir / "cert.pem"), "--resolve", f"{DOMAIN}:{port}:127.0.0.1",
         "-H", f"Authorization: {svc['token']}", "-w", "\n%{http_code}", url],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    body, _, code = out.stdout.rpartition("\n")
    assert out.returncode == 0 and code == "200" and "pid" in json.loads(body), out


def test_plain_http_is_redirected_to_https(svc: dict[str, Any]) -> None:
    https_url = svc["endpoints"]["internet"] + "/pid?x=1"
    http_url = https_url.replace("https://", "http://")
    resp = requests.get(http_url, allow_redirects=False, timeout=10)
    assert resp.status_code == 308 and resp.headers["Location"] == https_url


def test_tls_files_are_checked_at_create(server: Server, tls_dir: Path) -> None:
    base = {"name": "gw-badtls", "enable_internet": True, "enable_intranet": False}
    base["listen"] = {"internet": "127.0.0.1:0"}
    with requests.Session() as api:
        api.headers["Authorization"] = f"Bearer {server.admin_token}"
        url = server.api + "/api/v2/gateways"
        relative = api.post(url, json={**base, "tls": {"cert": "cert.pem", "key": "key.pem"}}, timeout=10)
        assert relative.status_code == 400
        assert {p["field"] for p in relative.json()["problems"]} == {"tls.cert", "tls.key"}
        (tls_dir / "other").mkdir()
        _, other_key = make_cert(tls_dir / "other", ["other"])
        mismatch = {"cert": str(tls_dir / "cert.pem"), "key": str(other_key)}
        resp = api.post(url, json={**base, "tls": mismatch}, timeout=10)
        assert resp.status_code == 400 and resp.json()["problems"][0]["field"] == "tls", resp.text
        bad_domain = {"cert": str(tls_dir / "cert.pem"), "key": str(tls_dir / "key.pem"), "domains": ["a b"]}
        resp = api.post(url, json={**base, "tls": bad_domain}, timeout=10)
        assert resp.status_code == 400 and resp.json()["problems"][0]["field"] == "tls.domains[0]"
        assert api.get(url + "/local/gw-badtls", timeout=10).status_code == 404
