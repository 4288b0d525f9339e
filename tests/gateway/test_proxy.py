"""The gateway process against real upstreams: auth, routing, limits, errors, streaming."""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.gateway.conftest import PAIR_TOKEN, TOKEN, MiB, Stack
from tests.gateway.harness import add_instance, add_service, raw_exchange, read_responses, sdk_headers

AUTH = {"Authorization": TOKEN}


def assert_error(resp: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = resp.json()
    assert body["code"] == status
    assert isinstance(body["reason"], str) and body["reason"]
    assert body["request_id"] and resp.headers["X-Request-Id"] == body["request_id"]
    for word in words:
        assert word.lower() in body["message"].lower(), body
    return body


def test_ready_line_names_both_listeners(stack: Stack) -> None:
    line = stack.gateway.ready_line
    assert line.startswith("openeas-gateway shared ready ")
    assert f"internet=127.0.0.1:{stack.gateway.ports['internet']}" in line
    assert f"intranet=127.0.0.1:{stack.gateway.ports['intranet']}" in line
    for base in (stack.gateway.internet, stack.gateway.intranet):
        resp = requests.get(base + "/api/predict/echo/echo", headers=AUTH, timeout=5)
        assert resp.status_code == 200


def test_prefix_stripped_query_kept_headers_rewritten(stack: Stack) -> None:
    resp = requests.get(
        stack.url("echo", "/echo/deeper?x=1&y=two"),
        headers={**AUTH, "X-Custom": "kept", "X-Forwarded-For": "10.1.2.3", "Connection": "keep-alive"},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    echo = resp.json()
    assert echo["path"] == "/echo/deeper" and echo["query"] == "x=1&y=two"
    headers = echo["headers"]
    assert "authorization" not in headers  # the instance never learns the token
    assert headers["x-custom"] == "kept"
    assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert headers["x-request-id"] == resp.headers["X-Request-Id"]
    assert "connection" not in headers and "keep-alive" not in headers
    # empty sub-path -> "/"
    root = requests.get(stack.url("echo"), headers=AUTH, timeout=5).json()
    assert root["path"] == "/" and root["query"] == ""
    assert requests.get(stack.url("echo", "?q=1"), headers=AUTH, timeout=5).json()["query"] == "q=1"


def test_auth_forms_accepted(stack: Stack) -> None:
    url = stack.url("echo", "/echo")
    assert requests.post(url, data=b"x", headers={"Authorization": TOKEN}, timeout=5).status_code == 200
    assert requests.post(url, data=b"x", headers={"Authorization": "Bearer " + TOKEN}, timeout=5).ok
    assert requests.post(url, data=b"x", headers={"Authorization": "bearer " + TOKEN}, timeout=5).ok
    # the eas-prediction SDK: POST /api/predict/<service> signed with HMAC-SHA1
    body = b'{"prompt": "hello"}'
    resp = requests.post(stack.url("echo"), data=body, headers=sdk_headers(TOKEN, "echo", body), timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "authorization" not in resp.json()["headers"]
    # Go SDK style: the signed resource carries the request path as well
    signed = sdk_headers(TOKEN, "echo/echo", body)
    assert requests.post(url, data=body, headers=signed, timeout=5).status_code == 200


def test_401_missing_and_wrong_token(stack: Stack) -> None:
    url = stack.url("echo", "/echo")
    assert_error(requests.get(url, timeout=5), 401, "token")
    wrong = "W" * 40
    body = assert_error(requests.get(url, headers={"Authorization": wrong}, timeout=5), 401, "token")
    assert wrong not in json.dumps(body)
    assert_error(requests.get(url, headers={"Authorization": "Bearer " + wrong}, timeout=5), 401)
    assert_error(requests.get(url, headers={"Authorization": "EAS bm90IGEgc2lnbmF0dXJl"}, timeout=5), 401)
    # a token of another service is not valid here
    assert_error(requests.get(url, headers={"Authorization": PAIR_TOKEN}, timeout=5), 401)
    # a signature does not survive a change of any signed header
    signed = sdk_headers(TOKEN, "echo", b"one body")
    tampered = {**signed, "Date": "Mon, 01 Jan 2001 00:00:00 GMT"}
    assert_error(requests.post(stack.url("echo"), data=b"one body", headers=tampered, timeout=5), 401)


def test_404_unknown_service_and_wrong_path(stack: Stack) -> None:
    body = assert_error(
        requests.post(stack.url("no_such_service", "/v1/chat/completions"), timeout=5),
        404,
        "no_such_service",
        "service name",
        "path",
    )
    assert "/api/predict/" in body["message"]
    assert_error(requests.get(stack.base + "/v1/chat/completions", timeout=5), 404, "/api/predict/", "path")
    assert_error(requests.get(stack.base + "/api/predict", timeout=5), 404, "path")


def test_405_trace_and_400_malformed(stack: Stack) -> None:
    resp = requests.request("TRACE", stack.url("echo", "/echo"), headers=AUTH, timeout=5)
    assert_error(resp, 405, "TRACE")
    out = raw_exchange(stack.gateway.ports["internet"], b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:100]
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and json.loads(body)["code"] == 400
    out = raw_exchange(
        stack.gateway.ports["internet"], b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 405 "), out[:100]


def test_413_by_content_length(stack: Stack) -> None:
    url = stack.url("echo", "/echo")
    ok = requests.post(url, data=b"x" * MiB, headers=AUTH, timeout=30)
    assert ok.status_code == 200 and ok.json()["body_len"] == MiB  # exactly 1 MiB is allowed
    assert_error(requests.post(url, data=b"x" * (MiB + 1), headers=AUTH, timeout=30), 413, "1 MiB")
    # a huge announced body is refused from the head alone: nothing else is sent
    port = stack.gateway.ports["internet"]
    out = raw_exchange(
        port,
        b"POST /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
        b"Content-Length: 5000000000\r\n\r\n" % TOKEN.encode(),
        timeout=5,
    )
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]


def test_413_chunked_without_reading_it_all(stack: Stack) -> None:
    """2 MiB chunked that never ends: the 413 arrives once 1 MiB is crossed."""
    sock = socket.create_connection(("127.0.0.1", stack.gateway.ports["internet"]), timeout=10)
    try:
        sock.sendall(
            b"POST /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % TOKEN.encode()
        )
        chunk = b"y" * 65536
        sent = 0
        try:
            for _ in range(32):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
        assert b"Connection: close" in data
    finally:
        sock.close()


def test_chunked_request_body_forwarded(stack: Stack) -> None:
    payload = b"".join(b"piece %d;" % i for i in range(5000))

    def gen() -> Any:
        for i in range(0, len(payload), 7000):
            yield payload[i : i + 7000]

    resp = requests.post(stack.url("echo", "/echo"), data=gen(), headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    echo = resp.json()
    assert echo["body_len"] == len(payload)
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert echo["headers"]["transfer-encoding"] == "chunked"


def test_large_bodies_both_ways_intact(stack: Stack) -> None:
    body = bytes(range(256)) * (900 * 1024 // 256)
    with requests.Session() as s:
        for _ in range(3):
            resp = s.post(stack.url("echo", "/raw"), data=body, headers=AUTH, timeout=30)
            assert resp.status_code == 200
            assert resp.content == body
        big = s.get(stack.url("echo", "/bytes?n=3000000"), headers=AUTH, timeout=30)
        assert len(big.content) == 3_000_000 and big.content[:256] == bytes(range(256))
        for kind in ("chunked", "until-close"):
            resp = s.get(stack.url("echo", f"/{kind}?n=921600"), headers=AUTH, timeout=30)
            assert resp.status_code == 200 and resp.content == (bytes(range(256)) * 3600)
            if kind == "until-close":
                assert resp.headers["Transfer-Encoding"] == "chunked"  # re-framed for keep-alive


def test_503_no_ready_instance(stack: Stack) -> None:
    body = assert_error(requests.get(stack.url("waiting", "/x"), headers=AUTH, timeout=5), 503)
    assert "no ready instance" in body["message"] and "Waiting" in body["message"]
    assert "no healthy upstream" in body["message"]
    body = assert_error(requests.get(stack.url("stopped", "/x"), headers=AUTH, timeout=5), 503)
    assert "no ready instance" in body["message"] and "Stopped" in body["message"]


def test_503_when_instance_port_is_dead(stack: Stack) -> None:
    started = time.monotonic()
    assert_error(requests.get(stack.url("dead", "/x"), headers=AUTH, timeout=5), 503, "no ready instance")
    assert time.monotonic() - started < 2


def test_503_when_instance_closes_without_answering(stack: Stack) -> None:
    assert_error(requests.post(stack.url("echo", "/close-now"), headers=AUTH, timeout=5), 503, "crashed")
    # the gateway and the instance both still serve
    assert requests.get(stack.url("echo", "/echo"), headers=AUTH, timeout=5).status_code == 200


def test_instance_breaks_mid_response_client_sees_a_broken_response(stack: Stack) -> None:
    port = stack.gateway.ports["internet"]
    out = raw_exchange(
        port,
        b"GET /api/predict/echo/close-mid HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode(),
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in head
    assert len(body) < 100000  # cut: the client can tell the response is incomplete


def test_504_when_connecting_to_the_instance_hangs(stack: Stack) -> None:
    started = time.monotonic()
    resp = requests.get(stack.url("blackhole", "/x"), headers=AUTH, timeout=10)
    assert_error(resp, 504, "connecting")
    assert 2.8 <= time.monotonic() - started < 4.5  # connect timeout min(keepalive 8 s, 3 s)


def test_instance_closing_idle_connections_is_harmless(stack: Stack) -> None:
    """A pooled connection the instance closed (here: after an until-close answer) is not reused."""
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(stack.url("echo", "/until-close?n=10"), headers=AUTH, timeout=5).status_code == 200
            assert s.get(stack.url("echo", "/echo"), headers=AUTH, timeout=5).status_code == 200
            assert s.get(stack.url("echo", "/close-now"), headers=AUTH, timeout=5).status_code == 503
            assert s.get(stack.url("echo", "/echo"), headers=AUTH, timeout=5).status_code == 200


def test_request_head_too_large_is_431(stack: Stack) -> None:
    port = stack.gateway.ports["internet"]
    huge = b"X-Big: " + b"b" * 70000 + b"\r\n"
    out = raw_exchange(port, b"GET /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), out[:200]  # RFC 6585; was 400 before issue 17
    assert "64 KiB" in json.loads(body)["message"]


def test_408_over_keepalive(stack: Stack) -> None:
    started = time.monotonic()
    resp = requests.get(stack.url("echo", "/sleep?ms=2500"), headers=AUTH, timeout=10)
    elapsed = time.monotonic() - started
    assert_error(resp, 408, "keepalive", "1000 ms")
    assert 0.9 <= elapsed < 1.6, elapsed  # keepalive is 1000 ms
    fast = requests.get(stack.url("echo", "/sleep?ms=100"), headers=AUTH, timeout=5)
    assert fast.status_code == 200


def test_408_counts_a_slow_request_body(stack: Stack) -> None:
    """Keepalive counts receive + queue + compute: a body that never finishes gets a 408."""
    sock = socket.create_connection(("127.0.0.1", stack.gateway.ports["internet"]), timeout=5)
    try:
        started = time.monotonic()
        sock.sendall(
            b"POST /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            b"Content-Length: 100\r\n\r\nonly part" % TOKEN.encode()
        )
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert 0.9 <= time.monotonic() - started < 1.6
    finally:
        sock.close()


def test_sse_events_arrive_one_by_one(stack: Stack) -> None:
    stamps: list[float] = []
    events: list[dict[str, Any]] = []
    with requests.get(stack.url("echo", "/sse?n=6&ms=150"), headers=AUTH, stream=True, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers.get("X-Request-Id")
        for line in resp.iter_lines(chunk_size=None):
            if line.startswith(b"data: "):
                stamps.append(time.time())
                events.append(json.loads(line[6:]))
    assert [e["i"] for e in events] == list(range(6))
    # each event reached the client close to when the instance sent it, not all at the end
    for stamp, event in zip(stamps, events, strict=True):
        assert stamp - event["sent"] < 0.1, (stamp, event)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) > 0.08, gaps


def test_sse_stream_may_outlast_keepalive(stack: Stack) -> None:
    """Keepalive (1 s on `echo`) stops at the response head: a 1.5 s stream is not cut."""
    with requests.get(stack.url("echo", "/sse?n=4&ms=500"), headers=AUTH, stream=True, timeout=10) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith(b"data: ")]
    assert len(lines) == 4


def test_client_keep_alive_and_pipelining(stack: Stack) -> None:
    port = stack.gateway.ports["internet"]
    req = b"GET /api/predict/echo/echo?n=%d HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # three requests in one write: three answers, in order, on the same connection
        sock.sendall(b"".join(req % (i, TOKEN.encode()) for i in range(3)))
        answers = read_responses(sock, 3)
        assert [json.loads(body)["query"] for _, body in answers] == ["n=0", "n=1", "n=2"]
        # and the connection is still usable afterwards
        sock.sendall(req % (9, TOKEN.encode()))
        ((head, body),) = read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["query"] == "n=9"
        # an error answer does not close a keep-alive connection either
        sock.sendall(b"GET /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        ((head, body),) = read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 401") and b"Connection: close" not in head
        sock.sendall(req % (10, TOKEN.encode()))
        ((head, body),) = read_responses(sock, 1)
        assert json.loads(body)["query"] == "n=10"


def test_error_with_body_keeps_connection_usable(stack: Stack) -> None:
    port = stack.gateway.ports["internet"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        body = b"z" * 20000
        sock.sendall(
            b"POST /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        ((head, _),) = read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 401")
        sock.sendall(
            b"GET /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode()
        )
        ((head, _),) = read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 200")


def test_requests_session_reuses_connection(stack: Stack) -> None:
    with requests.Session() as s:
        peers = set()
        for _ in range(5):
            resp = s.get(stack.url("echo", "/echo"), headers=AUTH, timeout=5, stream=True)
            peers.add(resp.raw._connection.sock.getsockname())  # type: ignore[union-attr]
            resp.content  # noqa: B018
        assert len(peers) == 1


def test_http10_client(stack: Stack) -> None:
    port = stack.gateway.ports["internet"]
    out = raw_exchange(
        port,
        b"GET /api/predict/echo/until-close?n=5000 HTTP/1.0\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode(),
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert len(body) == 5000
    out = raw_exchange(
        port, b"GET /api/predict/echo/echo HTTP/1.0\r\nAuthorization: %s\r\n\r\n" % TOKEN.encode()
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["headers"]["host"]
    # HTTP/1.0 keep-alive: kept when the length is known
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(
                b"GET /api/predict/echo/bytes?n=100 HTTP/1.0\r\nConnection: keep-alive\r\n"
                b"Authorization: %s\r\n\r\n" % TOKEN.encode()
            )
            ((head, body),) = read_responses(sock, 1)
            assert b"Connection: keep-alive" in head and len(body) == 100


def test_expect_100_continue(stack: Stack) -> None:
    port = stack.gateway.ports["internet"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/predict/echo/echo HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n" % TOKEN.encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        ((head, body),) = read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 200")
        echo = json.loads(body)
        assert echo["body_len"] == 5 and "expect" not in echo["headers"]


def test_least_outstanding_balancing(stack: Stack) -> None:
    # sequential requests alternate (ties broken round-robin)
    names = [_pair_name(stack) for _ in range(6)]
    assert sorted(names) == ["a", "a", "a", "b", "b", "b"], names
    # while one instance is busy with a slow request, the others go to the idle one
    slow_result: dict[str, Any] = {}

    def slow() -> None:
        r = requests.get(stack.url("pair", "/sleep?ms=800"), headers={"Authorization": PAIR_TOKEN}, timeout=5)
        slow_result.update(r.json())

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    quick = [_pair_name(stack) for _ in range(4)]
    t.join()
    assert slow_result["name"] not in quick and len(set(quick)) == 1, (slow_result, quick)


def test_snapshot_update_is_picked_up(stack: Stack) -> None:
    token = "tok-Late-0123456789abcdefghij"
    url = stack.url("late", "/echo")
    assert requests.get(url, headers={"Authorization": token}, timeout=5).status_code == 404
    add_service(stack.registry, "late", token, [stack.b.port])
    deadline = time.monotonic() + 1.5
    while True:
        resp = requests.get(url, headers={"Authorization": token}, timeout=5)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert resp.status_code == 200 and resp.json()["name"] == "b"
    # an instance going unready leaves the routes as fast
    add_instance(stack.registry, "late", "late-0", stack.b.port, state="unready")
    deadline = time.monotonic() + 1.5
    while requests.get(url, headers={"Authorization": token}, timeout=5).status_code != 503:
        assert time.monotonic() < deadline, "the unready instance was still routed to"
        time.sleep(0.05)
    stack.registry.delete_service("late")


def test_tokens_never_in_access_log(stack: Stack) -> None:
    # make sure some requests, including failed ones, went through
    requests.get(stack.url("echo", "/echo?q=1"), headers=AUTH, timeout=5)
    requests.get(stack.url("echo", "/echo"), headers={"Authorization": "Bearer " + TOKEN + "x"}, timeout=5)
    time.sleep(1.3)  # the log is flushed once a second
    text = stack.access_log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) > 10
    assert TOKEN not in text and PAIR_TOKEN not in text and "Authorization" not in text
    record = lines[-2]
    assert record["service"] == "echo" and record["path"] == "/echo" and record["status"] == 200
    assert {"method", "bytes", "upstream", "duration_ms", "request_id", "peer"} <= record.keys()
    assert lines[-1]["status"] == 401
    stderr = stack.gateway.stderr_text()
    assert TOKEN not in stderr and "Traceback" not in stderr, stderr


def _pair_name(stack: Stack) -> str:
    resp = requests.get(stack.url("pair", "/echo"), headers={"Authorization": PAIR_TOKEN}, timeout=5)
    return str(resp.json()["name"])


SDK_SCRIPT = """
import json, sys
from eas_prediction import PredictClient, StringRequest
from eas_prediction.exception import PredictException
endpoint, service, token = sys.argv[1:4]
client = PredictClient(endpoint, service)
client.set_token(token)
client.set_retry_count(1)
client.init()
out = {}
resp = client.predict(StringRequest('{"hello": "sdk"}'))
out["echo"] = json.loads(resp.response_data)
bad = PredictClient(endpoint, service)
bad.set_token(token[::-1])
bad.set_retry_count(1)
bad.init()
try:
    bad.predict(StringRequest("x"))
except PredictException as exc:
    out["bad_code"] = exc.code
print(json.dumps(out))
"""


def test_official_eas_prediction_sdk(stack: Stack, eas_python: Path) -> None:
    """The unmodified eas-prediction SDK signs its requests (EAS HMAC): they pass, wrong ones 401."""
    result = subprocess.run(
        [str(eas_python), "-c", SDK_SCRIPT, stack.base, "echo", TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    echo = out["echo"]
    assert echo["method"] == "POST" and echo["path"] == "/"
    assert echo["body_sha256"] == hashlib.sha256(b'{"hello": "sdk"}').hexdigest()
    assert "authorization" not in echo["headers"] and echo["headers"]["content-md5"]
    assert out["bad_code"] == 401


def test_broken_chunked_body_is_400_and_closed(stack: Stack) -> None:
    out = raw_exchange(
        stack.gateway.ports["internet"],
        b"POST /api/predict/echo/slow-read?ms=300 HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ not a chunk\r\n\r\n" % TOKEN.encode(),
    )
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"Connection: close" in out.partition(b"\r\n\r\n")[0]
