"""Raw requests, one per framing rule (openeas.gateway.framing.RULES), for test_framing.py.

Each case targets `/api/predict/svc/<rule>` with the service token, so the recording instance
behind the gateway (and behind nginx) shows which case reached it. The bytes are written by
hand: no client library would send most of them.
"""

from __future__ import annotations

TOKEN = "framing-token"


def _req(
    rule: str, head: str, body: bytes = b"", target: str | None = None, version: str = "HTTP/1.1"
) -> bytes:
    """`head`: the header lines after the request line, each ending in CRLF (written as \\r\\n)."""
    line = f"{target or '/api/predict/svc/' + rule} {version}\r\n"
    return line.encode() + head.encode("latin-1") + b"\r\n" + body


A = f"Authorization: {TOKEN}\r\n"
H = "Host: gw.example\r\n"
CHUNKED = "Transfer-Encoding: chunked\r\n"

CASES: dict[str, bytes] = {
    "cl-and-te": b"POST " + _req("cl-and-te", H + A + "Content-Length: 5\r\n" + CHUNKED, b"0\r\n\r\n"),
    "te-not-chunked": b"POST "
    + _req("te-not-chunked", H + A + "Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    "te-twice": b"POST " + _req("te-twice", H + A + CHUNKED + CHUNKED, b"3\r\nabc\r\n0\r\n\r\n"),
    "te-http10": b"POST " + _req("te-http10", H + A + CHUNKED, b"3\r\nabc\r\n0\r\n\r\n", version="HTTP/1.0"),
    "cl-twice": b"POST " + _req("cl-twice", H + A + "Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
    "cl-invalid": b"POST " + _req("cl-invalid", H + A + "Content-Length: +3\r\n", b"abc"),
    "obs-fold": b"GET " + _req("obs-fold", H + A + "X-Folded: a\r\n b\r\n"),
    "bare-lf": b"GET /api/predict/svc/bare-lf HTTP/1.1\nHost: gw.example\n" + A.encode() + b"\r\n",
    "bare-cr": b"GET " + _req("bare-cr", H + A + "X-A: b\rX-B: c\r\n"),
    "chunk-ext": b"POST " + _req("chunk-ext", H + A + CHUNKED, b"3;ext=value\r\nabc\r\n0\r\n\r\n"),
    "chunk-line-long": b"POST "
    + _req("chunk-line-long", H + A + CHUNKED, b"3;ext=" + b"x" * 8000 + b"\r\nabc\r\n0\r\n\r\n"),
    "chunk-ext-bare-lf": b"POST " + _req("chunk-ext-bare-lf", H + A + CHUNKED, b"3;a\nb\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-invalid": b"POST " + _req("chunk-size-invalid", H + A + CHUNKED, b"0x3\r\nabc\r\n0\r\n\r\n"),
    "chunk-size-overflow": b"POST "
    + _req("chunk-size-overflow", H + A + CHUNKED, b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n"),
    "chunk-data-crlf": b"POST " + _req("chunk-data-crlf", H + A + CHUNKED, b"3\r\nabcdef\r\n0\r\n\r\n"),
    "trailers": b"POST " + _req("trailers", H + A + CHUNKED, b"3\r\nabc\r\n0\r\nX-Trailer: smuggled\r\n\r\n"),
    "header-name-invalid": b"GET " + _req("header-name-invalid", H + A + "X-Space : a\r\n"),
    "header-name-invalid~nul": b"GET " + _req("header-name-invalid~nul", H + A + "X-A\x00b: c\r\n"),
    "te-twice~chunked-gzip": b"POST "
    + _req("te-twice~chunked-gzip", H + A + "Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    "te-not-chunked~identity": b"POST "
    + _req("te-not-chunked~identity", H + A + "Transfer-Encoding: identity\r\n", b"abc"),
    "bare-lf~header": b"GET /api/predict/svc/bare-lf~header HTTP/1.1\r\nHost: gw.example\nX-A: b\r\n"
    + A.encode()
    + b"\r\n",
    "ctl-in-value~nul": b"GET " + _req("ctl-in-value~nul", H + A + "X-A: b\x00c\r\n"),
    "ctl-in-value": b"GET " + _req("ctl-in-value", H + A + "X-A: b\x01c\r\n"),
    "absolute-form": b"GET "
    + _req(
        "absolute-form",
        "Host: other.example\r\n" + A,
        target="http://gw.example/api/predict/svc/absolute-form",
    ),
    "absolute-form-other": b"GET "
    + _req("absolute-form-other", H + A, target="ftp://gw.example/api/predict/svc/absolute-form-other"),
    "asterisk-form": b"OPTIONS " + _req("asterisk-form", H + A, target="*"),
    "host-twice": b"GET " + _req("host-twice", H + "Host: other.example\r\n" + A),
    "host-missing": b"GET " + _req("host-missing", A),
    "host-invalid": b"GET " + _req("host-invalid", "Host: a b/c\r\n" + A),
    "version": b"GET " + _req("version", H + A, version="HTTP/1.2"),
    "http10-keep-alive": b"GET "
    + _req("http10-keep-alive", H + A + "Connection: keep-alive\r\n", version="HTTP/1.0"),
    "pipelined": b"GET " + _req("pipelined", H + A) + b"GET " + _req("pipelined", H + A),
    "expect-over-limit": b"POST "
    + _req("expect-over-limit", H + A + "Content-Length: 2000000\r\nExpect: 100-continue\r\n"),
    "expect-unknown": b"GET " + _req("expect-unknown", H + A + "Expect: magic\r\n"),
    "head-too-large": b"GET " + _req("head-too-large", H + A + "X-Big: " + "b" * 70000 + "\r\n"),
    "target-too-long": b"GET "
    + _req("target-too-long", H + A, target="/api/predict/svc/target-too-long?" + "q" * 70000),
    "method-unknown": b"FOO " + _req("method-unknown", H + A),
}

RESPONSES: dict[str, int] = {"pipelined": 2}  # cases answered more than once
# cases whose nginx answer differs from the rule's `nginx` column (the rule's note says why)
NGINX_OTHERWISE: dict[str, int] = {"ctl-in-value~nul": 400, "te-twice~chunked-gzip": 501}


def rule_of(case: str) -> str:
    """`rule~variant` -> `rule`."""
    return case.split("~")[0]
