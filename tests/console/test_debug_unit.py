"""The online-debug forwarder (control/console/debug.py) against a small local HTTP server:
validation, the token header, bounds on the body and the time, binary bodies, errors."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from openeas.control.console.debug import (
    MAX_REQUEST_BODY,
    DebugCall,
    forward,
    parse_debug_call,
    pick_endpoint,
    text_or_base64,
)
from openeas.control.errors import ApiError

TOKEN = "service-token-0123456789"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/api/predict/svc/headers"):
            seen = {k.lower(): v for k, v in self.headers.items()}
            self._send(200, json.dumps({"headers": seen, "path": self.path}).encode())
        elif self.path == "/api/predict/svc/big":
            self._send(200, b"x" * 5000, "text/plain")
        elif self.path == "/api/predict/svc/binary":
            self._send(200, bytes(range(256)), "application/octet-stream")
        elif self.path == "/api/predict/svc/slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            time.sleep(2)
            self.wfile.write(b"4\r\nlate\r\n0\r\n\r\n")
        elif self.path == "/api/predict/svc/hang":
            time.sleep(2)
            self._send(200, b"{}")
        else:
            self._send(404, b'{"error": "no route"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = self.headers.get("Content-Type") or "none"
        self._send(201, json.dumps({"got": body.decode(), "content_type": ctype}).encode())


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout tests) is expected


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/predict/svc"
    finally:
        httpd.shutdown()
        httpd.server_close()


def run(base: str, data: dict[str, Any], max_body: int = 1024 * 1024) -> dict[str, Any]:
    call = parse_debug_call(data)
    return asyncio.run(forward(base, "internet", TOKEN, call, max_body=max_body))


def test_sends_the_service_token_and_reports_status_headers_body(base: str) -> None:
    out = run(base, {"method": "GET", "path": "/headers?x=1"})
    assert out["status"] == 200 and out["reason"] == "OK"
    assert out["url"] == base + "/headers?x=1" and out["method"] == "GET" and out["endpoint"] == "internet"
    seen = json.loads(out["body"])
    assert seen["headers"]["authorization"] == TOKEN
    assert seen["path"] == "/api/predict/svc/headers?x=1"
    assert ["Content-Type", "application/json"] in [[k.title(), v] for k, v in out["headers"]]
    assert out["body_encoding"] == "text" and not out["body_truncated"] and out["note"] == ""
    assert out["body_bytes"] == len(out["body"].encode()) and out["elapsed_ms"] >= 0
    # An Authorization header of the user's own replaces the token (to try a wrong one).
    out = run(base, {"method": "GET", "path": "/headers", "headers": {"Authorization": "wrong"}})
    assert json.loads(out["body"])["headers"]["authorization"] == "wrong"
    # Headers as [name, value] pairs; hop-by-hop ones are dropped.
    out = run(base, {"method": "GET", "path": "/headers", "headers": [["X-A", "1"], ["Connection", "close"]]})
    assert json.loads(out["body"])["headers"]["x-a"] == "1"


def test_body_and_content_type(base: str) -> None:
    out = run(base, {"path": "/", "body": '{"a": 1}'})  # POST is the default method
    assert out["status"] == 201
    assert json.loads(out["body"]) == {"got": '{"a": 1}', "content_type": "application/json"}
    out = run(base, {"path": "/", "body": "plain words"})
    assert json.loads(out["body"])["content_type"] == "text/plain; charset=utf-8"
    out = run(base, {"path": "/", "body": "<x/>", "headers": {"content-type": "application/xml"}})
    assert json.loads(out["body"])["content_type"] == "application/xml"
    out = run(base, {"method": "post", "path": ""})
    assert json.loads(out["body"])["got"] == ""


def test_the_answer_is_bounded_in_size_and_time(base: str) -> None:
    out = run(base, {"method": "GET", "path": "/big"}, max_body=1000)
    assert out["status"] == 200 and out["body"] == "x" * 1000 and out["body_bytes"] == 1000
    assert out["body_truncated"] and "1000 bytes" in out["note"]
    started = time.monotonic()
    out = run(base, {"method": "GET", "path": "/slow-body", "timeout": 0.8})
    assert time.monotonic() - started < 1.8
    assert out["status"] == 200 and out["body"] == "first" and out["body_truncated"]
    assert "still arriving" in out["note"]
    with pytest.raises(ApiError) as err:
        run(base, {"method": "GET", "path": "/hang", "timeout": 0.5})
    assert err.value.status == 504 and err.value.code == "DebugTimeout"


def test_binary_bodies_come_as_base64(base: str) -> None:
    out = run(base, {"method": "GET", "path": "/binary"})
    assert out["body_encoding"] == "base64" and base64.b64decode(out["body"]) == bytes(range(256))
    # A text body cut inside a UTF-8 character is still text.
    assert text_or_base64("héllo".encode()[:2], truncated=True) == ("h", "text")
    assert text_or_base64(b"\xff\xfe", truncated=False)[1] == "base64"


def test_unreachable_gateway_is_a_502() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiError) as err:
        run(f"http://127.0.0.1:{port}/api/predict/svc", {"method": "GET"})
    assert err.value.status == 502 and err.value.code == "DebugUnreachable"
    assert str(port) in err.value.message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([], "JSON object"),
        ({"method": "BREW"}, "method"),
        ({"path": "v1/chat"}, "start it with /"),
        ({"path": "/a b"}, "space"),
        ({"path": "/../other_service/"}, ".."),
        ({"path": "/x" * 2000}, "at most 2048"),
        ({"headers": "Content-Type: a"}, "headers is"),
        ({"headers": {"Bad Name": "x"}}, "not a valid header name"),
        ({"headers": {"X": "a\r\nInjected: 1"}}, "line break"),
        ({"headers": {f"X-{i}": "v" for i in range(65)}}, "at most 64"),
        ({"body": {"a": 1}}, "body is a string"),
        ({"body": "x" * (MAX_REQUEST_BODY + 1)}, "at most"),
        ({"endpoint": "lan"}, "internet"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 1000}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"verb": "GET"}, "unknown field"),
    ],
)
def test_invalid_requests_say_what_is_wrong(data: Any, words: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_debug_call(data)
    assert err.value.status == 400 and err.value.code == "InvalidRequest"
    assert words in err.value.message


def test_defaults_and_endpoint_choice() -> None:
    call = parse_debug_call({})
    assert call == DebugCall("POST", "", (), b"", None, 30.0)
    both = {"internet": "http://i/api/predict/s", "vpc": "http://v/api/predict/s"}
    assert pick_endpoint(both, None, "s") == ("internet", both["internet"])
    assert pick_endpoint(both, "vpc", "s") == ("vpc", both["vpc"])
    assert pick_endpoint({"internet": None, "vpc": both["vpc"]}, None, "s") == ("vpc", both["vpc"])
    with pytest.raises(ApiError) as err:
        pick_endpoint({"internet": None, "vpc": both["vpc"]}, "internet", "s")
    assert err.value.status == 409 and "Internet endpoint" in err.value.message
