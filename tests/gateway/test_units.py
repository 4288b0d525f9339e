"""Pure pieces of the hot path: routing, auth, balancing, error bodies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openeas.gateway import errors
from openeas.gateway.accesslog import AccessLog
from openeas.gateway.auth import eas_signature, header_value, is_authorized, string_to_sign
from openeas.gateway.instances import UpstreamState
from openeas.gateway.pickers import PICKERS, LeastOutstanding, new_picker, strategy_for
from openeas.gateway.routes import RouteEntry
from openeas.gateway.routing import split_target
from openeas.gateway.snapshot import ServiceRoute, Upstream

TOKEN = b"unit-token-0123456789abcdef"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"/api/predict/svc", (b"svc", b"/")),
        (b"/api/predict/svc/", (b"svc", b"/")),
        (b"/api/predict/svc?x=1", (b"svc", b"/?x=1")),
        (b"/api/predict/svc/v1/chat/completions", (b"svc", b"/v1/chat/completions")),
        (b"/api/predict/svc/v1/models?a=1&b=/x", (b"svc", b"/v1/models?a=1&b=/x")),
        (b"/api/predict/grp.member/x", (b"grp.member", b"/x")),
        (b"http://example.com:80/api/predict/svc/x?q", (b"svc", b"/x?q")),
        (b"/api/predict/", (b"", b"/")),
        (b"/api/predict", None),
        (b"/api/predictsvc", None),
        (b"/v1/chat/completions", None),
        (b"/", None),
        (b"*", None),
    ],
)
def test_split_target(url: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert split_target(url) == expected


def _sdk_signature(token: bytes, verb: str, md5: str, ctype: str, date: str, resource: str) -> bytes:
    """Exactly what eas_prediction.PredictClient.generate_singaure computes."""
    auth = "%s\n%s\n%s\n%s\n%s" % (verb, md5, ctype, date, resource)  # noqa: UP031
    digest = hmac.new(bytearray(token), bytearray(auth.strip(), "utf-8"), hashlib.sha1).digest()
    return b"EAS " + base64.b64encode(digest)


def _headers(
    md5: str = "abc", ctype: str = "application/json", date: str = "Mon, 01 Jan 2024 00:00:00 GMT"
) -> list[tuple[bytes, bytes]]:
    return [(b"Content-MD5", md5.encode()), (b"content-type", ctype.encode()), (b"DATE", date.encode())]


def test_raw_and_bearer_tokens() -> None:
    no_headers: list[tuple[bytes, bytes]] = []
    args = (TOKEN, b"GET", b"/api/predict/s/x", b"s", no_headers)
    assert is_authorized(TOKEN, *args)
    assert is_authorized(b" " + TOKEN + b" ", *args)
    assert is_authorized(b"Bearer " + TOKEN, *args)
    assert is_authorized(b"bearer  " + TOKEN, *args)
    assert not is_authorized(None, *args)
    assert not is_authorized(b"", *args)
    assert not is_authorized(TOKEN[:-1], *args)
    assert not is_authorized(TOKEN + b"x", *args)
    assert not is_authorized(b"Bearer", *args)
    assert not is_authorized(b"Basic " + TOKEN, *args)
    assert not is_authorized(TOKEN, b"", b"GET", b"/api/predict/s", b"s", [])  # no token: nothing passes


def test_eas_signature_python_sdk() -> None:
    headers = _headers()
    auth = _sdk_signature(
        TOKEN, "POST", "abc", "application/json", "Mon, 01 Jan 2024 00:00:00 GMT", "/api/predict/s"
    )
    assert is_authorized(auth, TOKEN, b"POST", b"/api/predict/s", b"s", headers)
    # the Python SDK signs "/api/predict/<svc>" even when the URL has more (custom paths)
    assert is_authorized(auth, TOKEN, b"POST", b"/api/predict/s/v1/x?y=1", b"s", headers)
    # any signed header that differs breaks it
    for changed in (_headers(md5="abd"), _headers(ctype="text/plain"), _headers(date="Tue, 02 Jan 2024")):
        assert not is_authorized(auth, TOKEN, b"POST", b"/api/predict/s", b"s", changed)
    assert not is_authorized(auth, b"another-token-0123456789", b"POST", b"/api/predict/s", b"s", headers)
    assert not is_authorized(auth, TOKEN, b"POST", b"/api/predict/t", b"t", headers)
    assert not is_authorized(b"EAS " + b"A" * 28, TOKEN, b"POST", b"/api/predict/s", b"s", headers)


def test_eas_signature_go_and_java_resources() -> None:
    headers = _headers()
    date = "Mon, 01 Jan 2024 00:00:00 GMT"
    go = _sdk_signature(TOKEN, "POST", "abc", "application/json", date, "/api/predict/s/v1/x")
    assert is_authorized(go, TOKEN, b"POST", b"/api/predict/s/v1/x?y=1", b"s", headers)
    java = _sdk_signature(TOKEN, "POST", "abc", "application/json", date, "/api/predict/s/v1/x?y=1")
    assert is_authorized(java, TOKEN, b"POST", b"/api/predict/s/v1/x?y=1", b"s", headers)
    # a GET signed with its own verb, and a GET signed as POST (SDKs always write POST)
    get = _sdk_signature(TOKEN, "GET", "abc", "application/json", date, "/api/predict/s")
    assert is_authorized(get, TOKEN, b"GET", b"/api/predict/s", b"s", headers)
    assert is_authorized(
        _sdk_signature(TOKEN, "POST", "abc", "application/json", date, "/api/predict/s"),
        TOKEN,
        b"GET",
        b"/api/predict/s",
        b"s",
        headers,
    )
    assert not is_authorized(get, TOKEN, b"PUT", b"/api/predict/s", b"s", headers)


def test_eas_signature_with_missing_headers() -> None:
    auth = _sdk_signature(TOKEN, "POST", "", "", "", "/api/predict/s")
    assert is_authorized(auth, TOKEN, b"POST", b"/api/predict/s", b"s", [])
    assert eas_signature(TOKEN, string_to_sign(b"POST", b"", b"", b"", b"/api/predict/s")) == auth[4:]
    assert header_value(_headers(), b"content-md5") == b"abc"
    assert header_value(_headers(), b"x-missing") == b""


@dataclass
class _Request:
    """What a picker may read of a request (pickers.PickedRequest)."""

    method: bytes = b"GET"
    target: bytes = b"/"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def pick(entry: RouteEntry, now: float, tried: list[UpstreamState] | None) -> UpstreamState | None:
    return entry.picker.pick(entry.upstreams, now, tried, _Request())


def test_services_get_the_least_outstanding_picker() -> None:
    """The strategy is chosen per service from its spec; a spec without `metadata.llm_routing`
    selects the default, and a name this gateway does not know (a newer store) falls back to it."""
    assert strategy_for({"metadata": {"name": "s"}}) == "least_outstanding"
    assert isinstance(_entry(2).picker, LeastOutstanding)
    assert isinstance(new_picker("no-such-strategy"), LeastOutstanding)
    assert set(PICKERS) == {"least_outstanding", "prefix_affinity"}  # test_prefix_routing.py
    # one picker per route entry: their round-robin cursors are independent
    a, b = _entry(3), _entry(3)
    assert a.picker is not b.picker


def _entry(n: int) -> RouteEntry:
    ups = tuple(Upstream(f"i{i}", "127.0.0.1", 9000 + i) for i in range(n))
    route = ServiceRoute(name="s", token=TOKEN, upstreams=ups, timeout_s=5.0, status="Running")
    return RouteEntry(route, [UpstreamState(u) for u in ups])


def test_pick_round_robin_among_equals() -> None:
    entry = _entry(3)
    picks = [pick(entry, 0.0, None) for _ in range(6)]
    assert [p.port for p in picks if p] == [9000, 9001, 9002, 9000, 9001, 9002]
    assert pick(_entry(0), 0.0, None) is None


def test_pick_least_outstanding_and_down_marks() -> None:
    entry = _entry(3)
    a, b, c = entry.upstreams
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 2
    assert all(pick(entry, 0.0, None) is b for _ in range(4))
    b.mark_down(now=10.0)  # refused a connection: avoided for about a second
    assert pick(entry, 10.5, None) is c
    assert pick(entry, 11.5, None) is b  # the mark expired
    # tried instances are skipped; when only down ones are left, they are still tried
    assert pick(entry, 10.5, [c]) is a
    assert pick(entry, 10.5, [a, c]) is b
    assert pick(entry, 10.5, [a, b, c]) is None
    single = _entry(1)
    assert pick(single, 0.0, None) is single.upstreams[0]
    assert pick(single, 0.0, [single.upstreams[0]]) is None


def test_error_response_shape() -> None:
    raw = errors.error_response(
        404, errors.msg_not_found_service("x"), b"rid-1", close=False, keep_alive_10=False
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 404 Not Found"
    assert b"Content-Type: application/json" in lines and b"X-Request-Id: rid-1" in lines
    assert b"Content-Length: %d" % len(body) in lines
    assert not any(line.startswith(b"Connection:") for line in lines)
    payload = json.loads(body)
    assert payload == {
        "code": 404,
        "reason": "Not Found",
        "message": payload["message"],
        "request_id": "rid-1",
    }
    assert "service name" in payload["message"] and "path" in payload["message"]
    closing = errors.error_response(413, errors.msg_too_large(1 << 20), b"r", close=True, keep_alive_10=False)
    assert b"Connection: close\r\n" in closing and b"1 MiB" in closing
    assert b"Connection: keep-alive\r\n" in errors.error_response(
        401, "m", b"r", close=False, keep_alive_10=True
    )


def test_access_log_line_is_what_json_dumps_writes(tmp_path: Path) -> None:
    """The access log formats its line directly (cheaper than a dict and json.dumps per request):
    it must stay the same JSON, escapes and field order included."""

    @dataclass
    class Peer:
        peer: bytes = b"::1"

    @dataclass
    class Member:
        name: str = 'm\u00e9"mber'

    @dataclass
    class Finished:
        service: bytes = b"g"
        entry: Member | None = field(default_factory=Member)
        client: Peer = field(default_factory=Peer)
        method: bytes = b"POST"
        url: bytes = b'/api/predict/g/a"b?q=1'
        target: bytes = b'/a"b\xff?q=1'
        status: int = 200
        bytes_out: int = 15
        up_addr: str = ""
        t_start: float = 1.0
        request_id: bytes = b"rid-1"

    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.write(Finished(), 1.0123456, "internet")
    log.write(Finished(entry=None, target=b"", status=401), 1.5, "intranet")
    log.close()
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [json.dumps(r, separators=(",", ":")) for r in records] == lines
    assert records[0]["path"] == '/a"b\u00ff' and records[0]["member"] == 'm\u00e9"mber'
    assert records[0]["duration_ms"] == 12.346 and records[0]["upstream"] == "-"
    assert records[1]["path"] == '/api/predict/g/a"b' and "member" not in records[1]
    fields = "time method service path status bytes upstream duration_ms request_id peer listener"
    assert list(records[1]) == fields.split()
