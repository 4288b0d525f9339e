"""HTTPS listeners: a self-signed certificate made here, curl and requests as clients, SNI for a
custom domain, plain HTTP on the TLS port (308 with ssl_redirect, else 400)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from openeas.store import Registry, sqlite_url
from tests.gateway.harness import (
    GatewayProc,
    Upstream,
    add_service,
    make_cert,
    make_registry,
    raw_exchange,
    start_gateway,
)

TOKEN = "tok-Tls-0123456789abcdefghijk"
AUTH = {"Authorization": TOKEN}
DOMAIN = "models.example.test"


@dataclass
class TlsStack:
    registry: Registry
    cert: Path
    redirecting: GatewayProc  # tls + ssl_redirect, Internet and intranet
    strict: GatewayProc  # tls only

    def url(self, gw: GatewayProc, kind: str = "internet", host: str = "127.0.0.1") -> str:
        return f"https://{host}:{gw.ports[kind]}/api/predict/echo"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]) -> Iterator[TlsStack]:
    a, _ = upstreams
    data_dir = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(data_dir, ["localhost", "127.0.0.1", DOMAIN])
    registry = make_registry(data_dir)
    both = {"internet": "127.0.0.1:0", "intranet": "127.0.0.1:0"}
    tls_spec = {"cert": str(cert), "key": str(key), "domains": [DOMAIN]}
    registry.put_gateway("tlsgw", {"listen": both, "tls": tls_spec, "ssl_redirect": True})
    registry.put_gateway("strict", {"listen": {"internet": "127.0.0.1:0"}, "tls": tls_spec})
    add_service(registry, "echo", TOKEN, [a.port], gateway="tlsgw")
    add_service(registry, "echo_strict", TOKEN, [a.port], gateway="strict")
    redirecting = start_gateway(sqlite_url(data_dir), "tlsgw", data_dir)
    strict = start_gateway(sqlite_url(data_dir), "strict", data_dir)
    try:
        yield TlsStack(registry, cert, redirecting, strict)
    finally:
        for gw in (redirecting, strict):
            rc = gw.terminate()
            assert rc == 0, gw.stderr_text()
            assert "Traceback" not in gw.stderr_text() and TOKEN not in gw.stderr_text()
        registry.close()


def test_requests_over_https_on_both_listeners(tls: TlsStack) -> None:
    with requests.Session() as s:
        for kind in ("internet", "intranet"):
            resp = s.get(
                tls.url(tls.redirecting, kind) + "/echo?q=1", headers=AUTH, verify=str(tls.cert), timeout=5
            )
            assert resp.status_code == 200, resp.text
            echo = resp.json()
            assert (
                echo["path"] == "/echo" and echo["query"] == "q=1" and "authorization" not in echo["headers"]
            )
        # auth and errors work the same over TLS
        assert s.get(tls.url(tls.redirecting) + "/echo", verify=str(tls.cert), timeout=5).status_code == 401
        # large bodies both ways, and a keep-alive connection reused
        body = bytes(range(256)) * 4096
        resp = s.post(
            tls.url(tls.redirecting) + "/raw", data=body, headers=AUTH, verify=str(tls.cert), timeout=30
        )
        assert (
            resp.status_code == 200 and hashlib.sha256(resp.content).digest() == hashlib.sha256(body).digest()
        )
        big = s.get(
            tls.url(tls.redirecting) + "/bytes?n=3000000", headers=AUTH, verify=str(tls.cert), timeout=30
        )
        assert len(big.content) == 3_000_000
    # it is TLS with this certificate: without trusting it, verification fails
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls.url(tls.redirecting) + "/echo", headers=AUTH, timeout=5)


def test_tls_version_is_at_least_1_2(tls: TlsStack) -> None:
    ctx = ssl.create_default_context(cafile=str(tls.cert))
    with (
        socket.create_connection(("127.0.0.1", tls.redirecting.ports["internet"]), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.selected_alpn_protocol() in (None, "http/1.1")


def test_curl_with_a_custom_domain_over_sni(tls: TlsStack) -> None:
    port = tls.redirecting.ports["internet"]
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(tls.cert),
            "--resolve",
            f"{DOMAIN}:{port}:127.0.0.1",
            "-H",
            f"Authorization: {TOKEN}",
            "-w",
            "\n%{http_code} %{ssl_verify_result}",
            f"https://{DOMAIN}:{port}/api/predict/echo/echo",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200 0"  # 200, certificate verified for the custom domain
    assert json.loads(body)["headers"]["host"] == f"{DOMAIN}:{port}"


def test_plain_http_is_redirected_with_308(tls: TlsStack) -> None:
    port = tls.redirecting.ports["internet"]
    resp = requests.get(
        f"http://127.0.0.1:{port}/api/predict/echo/echo?q=2", allow_redirects=False, timeout=5
    )
    assert resp.status_code == 308
    assert resp.headers["Location"] == f"https://127.0.0.1:{port}/api/predict/echo/echo?q=2"
    assert resp.headers["Connection"] == "close" and resp.json()["code"] == 308
    # clients that follow it repeat the request, body included, over TLS. requests (like curl)
    # drops the Authorization header when the scheme or port changes, so the token goes with
    # the request sent to the https URL itself.
    body = b'{"x": 1}'
    followed = requests.post(
        f"http://127.0.0.1:{port}/api/predict/echo/echo",
        data=body,
        headers=AUTH,
        verify=str(tls.cert),
        timeout=5,
    )
    assert [r.status_code for r in followed.history] == [308] and followed.url.startswith("https://")
    assert followed.status_code == 401  # the client did not forward the token to another scheme
    location = followed.history[0].headers["Location"]
    resp = requests.post(location, data=body, headers=AUTH, verify=str(tls.cert), timeout=5)
    assert resp.status_code == 200 and resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    # curl -L with the custom domain: redirected to https on the same host and port
    result = subprocess.run(
        [
            "curl",
            "-sSL",
            "--cacert",
            str(tls.cert),
            "--resolve",
            f"{DOMAIN}:{port}:127.0.0.1",
            "-w",
            "\n%{url_effective} %{num_redirects}",
            f"http://{DOMAIN}:{port}/api/predict/echo/echo",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result
    answer, _, where = result.stdout.rpartition("\n")
    assert where == f"https://{DOMAIN}:{port}/api/predict/echo/echo 1"
    assert json.loads(answer)["code"] == 401  # no token sent in this call: the https side answered


def test_plain_http_without_redirect_is_400(tls: TlsStack) -> None:
    out = raw_exchange(
        tls.strict.ports["internet"], b"GET /api/predict/echo_strict/echo HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"Connection: close" in head
    assert "https://" in json.loads(body)["message"]
    resp = requests.get(
        f"https://localhost:{tls.strict.ports['internet']}/api/predict/echo_strict/echo",
        headers=AUTH,
        verify=str(tls.cert),
        timeout=5,
    )
    assert resp.status_code == 200


def test_a_failed_handshake_does_not_hurt_the_gateway(tls: TlsStack) -> None:
    port = tls.strict.ports["internet"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05garbage")  # looks like TLS, is not
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # connected and closed without a byte: nothing to answer
    resp = requests.get(
        f"https://127.0.0.1:{port}/api/predict/echo_strict/echo",
        headers=AUTH,
        verify=str(tls.cert),
        timeout=5,
    )
    assert resp.status_code == 200
