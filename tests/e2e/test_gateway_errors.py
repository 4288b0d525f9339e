"""The EAS status codes through the real gateway: 401, 404, 413, 503, 408, crash + restart."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import requests

from tests.harness import Server, app_command, service_spec

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def svc(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec = service_spec("misbehaving", app_command("misbehaving.py"), rpc={"keepalive": 1000})
    created: dict[str, Any] = server.deploy(spec, tmp_path_factory.mktemp("specs"))
    assert created["status"] == "Running"
    return created


def _assert_error(resp: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["code"] == status
    assert body["request_id"] and resp.headers["X-Request-Id"] == body["request_id"]
    for word in words:
        assert word.lower() in body["message"].lower(), body
    return body


def test_prefix_stripped_query_kept_token_not_forwarded(svc: dict[str, Any]) -> None:
    resp = requests.get(
        svc["endpoints"]["internet"] + "/echo?x=1&y=two", headers={"Authorization": svc["token"]}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    echo = resp.json()
    assert echo["path"] == "/echo" and echo["query"] == "x=1&y=two"
    assert "authorization" not in echo["headers"]  # the instance never learns the token
    assert resp.headers.get("X-Request-Id")


def test_401_missing_and_wrong_token(svc: dict[str, Any]) -> None:
    url = svc["endpoints"]["internet"] + "/echo"
    body = _assert_error(requests.get(url, timeout=10), 401, "token")
    wrong = "W" * 40
    body = _assert_error(requests.get(url, headers={"Authorization": wrong}, timeout=10), 401, "token")
    assert wrong not in str(body)
    _assert_error(requests.get(url, headers={"Authorization": "Bearer " + wrong}, timeout=10), 401)
    _assert_error(requests.get(url, headers={"Authorization": "EAS bm90IGEgc2lnbmF0dXJl"}, timeout=10), 401)


def test_404_unknown_service_and_wrong_prefix(server: Server, svc: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{server.gateway_port}"
    _assert_error(
        requests.post(base + "/api/predict/no_such_service/v1/chat/completions", timeout=10),
        404,
        "no_such_service",
        "path",
    )
    _assert_error(requests.get(base + "/v1/chat/completions", timeout=10), 404, "/api/predict/")


def test_413_by_content_length(svc: dict[str, Any]) -> None:
    url = svc["endpoints"]["internet"] + "/echo"
    headers = {"Authorization": svc["token"]}
    ok = requests.post(url, data=b"x" * MiB, headers=headers, timeout=30)
    assert ok.status_code == 200 and ok.json()["body_len"] == MiB  # exactly 1 MiB is allowed
    _assert_error(requests.post(url, data=b"x" * (MiB + 1), headers=headers, timeout=30), 413, "1 MiB")


def test_413_chunked_without_reading_it_all(server: Server, svc: dict[str, Any]) -> None:
    """Send 1.25 MiB chunked and never finish the body: the 413 must still arrive."""
    sock = socket.create_connection(("127.0.0.1", server.gateway_port), timeout=10)
    try:
        sock.sendall(
            # /sleep answers only after 3 s: the instance cannot answer before the gateway's 413.
            b"POST /api/predict/misbehaving/sleep?ms=3000 HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: " + svc["token"].encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"y" * 65536
        try:
            for _ in range(20):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may close the connection as soon as it answered 413
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
    finally:
        sock.close()


def test_408_over_keepalive(svc: dict[str, Any]) -> None:
    url = svc["endpoints"]["internet"] + "/sleep?ms=3000"
    started = time.monotonic()
    resp = requests.get(url, headers={"Authorization": svc["token"]}, timeout=10)
    elapsed = time.monotonic() - started
    _assert_error(resp, 408)
    assert 0.9 <= elapsed < 2.5, elapsed  # keepalive is 1000 ms
    fast = requests.get(
        svc["endpoints"]["internet"] + "/sleep?ms=100", headers={"Authorization": svc["token"]}
    )
    assert fast.status_code == 200


def test_503_when_instance_dies_then_restarted(server: Server, svc: dict[str, Any]) -> None:
    headers = {"Authorization": svc["token"]}
    base = svc["endpoints"]["internet"]
    pid_before = requests.get(base + "/pid", headers=headers, timeout=10).json()["pid"]
    # The request that kills the instance gets a 503: the instance crashed on it.
    _assert_error(requests.post(base + "/crash", headers=headers, timeout=10), 503)
    # Until the reconciler has restarted it (backoff 1 s), no instance is ready: every answer is a
    # 503, and once the gateway knows the instance is gone it says "no healthy upstream".
    messages: list[str] = []
    deadline = time.monotonic() + 30
    pid_after = None
    while time.monotonic() < deadline:
        resp = requests.get(base + "/pid", headers=headers, timeout=10)
        if resp.status_code == 200:
            pid_after = resp.json()["pid"]
            break
        messages.append(_assert_error(resp, 503)["message"])
        time.sleep(0.05)
    assert pid_after is not None, "the crashed instance was not restarted within 30 s"
    assert any("no ready instance" in m for m in messages), messages
    assert pid_after != pid_before
    server.wait_for(
        lambda: server.cli_json("desc", "misbehaving")["status"] == "Running", what="status Running again"
    )


def test_503_when_service_stopped(server: Server, svc: dict[str, Any]) -> None:
    headers = {"Authorization": svc["token"]}
    url = svc["endpoints"]["vpc"] + "/echo"
    server.cli("stop", "misbehaving")
    server.wait_for(lambda: server.cli_json("desc", "misbehaving")["status"] == "Stopped", what="Stopped")
    server.wait_for(lambda: requests.get(url, headers=headers, timeout=10).status_code == 503, what="503")
    _assert_error(requests.get(url, headers=headers, timeout=10), 503, "stopped")
    server.cli("start", "misbehaving")
    server.wait_for(lambda: requests.get(url, headers=headers, timeout=10).status_code == 200, what="serving")
