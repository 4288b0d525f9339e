"""Request framing rules (RFC 9112): ONE table of what the gateway rejects or normalizes, and the checks.

HTTP request smuggling lives in the gaps between two parsers that frame the same bytes
differently. The gateway closes those gaps by refusing every ambiguous request before anything of
it reaches an instance, and by re-framing what it forwards itself (its own chunk sizes, its own
hop-by-hop headers). `RULES` is the table: each rule names the input, the answer (a status, then
the connection closed; or 0: accepted and normalized as `action` says), who checks it (`llhttp`,
the parser inside httptools, or `gateway`, the functions below) and what nginx (Debian's
nginx-light, proxying to the same upstream) answers for the same bytes. docs/gateway.md
("Framing") mirrors this table and tests/gateway/test_framing.py runs a corpus of raw requests,
one per rule, against the gateway and nginx and compares both with it.

`check_head` runs once per request head (client_connection.on_headers_complete), on the header
list the parser produced; `parser_error_rule` turns llhttp's error text into the rule it broke so
the 400 message says what was wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LLHTTP = "llhttp"
GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class FramingRule:
    name: str  # stable id: the corpus, the docs table and the 400 message use it
    what: str  # the input the rule is about
    status: int  # the gateway's answer, then close; 0: accepted (normalized as `action` says)
    action: str  # what the gateway does
    checked_by: str  # LLHTTP (the parser) or GATEWAY (check_head and the callbacks)
    nginx: int  # what nginx answers the same bytes (0: proxied); see `nginx_note` when they differ
    nginx_note: str = ""


RULES: tuple[FramingRule, ...] = (
    FramingRule(
        "cl-and-te",
        "Content-Length together with Transfer-Encoding",
        400,
        "rejected: the two framings disagree (RFC 9112 6.1 allows either; smuggling needs both)",
        LLHTTP,
        400,
    ),
    FramingRule(
        "te-not-chunked",
        "Transfer-Encoding other than exactly `chunked` (`gzip, chunked`, `identity`)",
        501,
        "rejected: no transfer coding but chunked is implemented (RFC 9112 6.1)",
        GATEWAY,
        501,
    ),
    FramingRule(
        "te-twice",
        "two Transfer-Encoding header lines, or a coding after `chunked` (`chunked, gzip`)",
        400,
        "rejected",
        LLHTTP,
        400,
        "nginx answers `chunked, gzip` with 501",
    ),
    FramingRule(
        "te-http10",
        "Transfer-Encoding in an HTTP/1.0 request",
        400,
        "rejected: RFC 9112 6.1 says the framing is faulty",
        GATEWAY,
        400,
    ),
    FramingRule(
        "cl-twice", "two Content-Length lines (equal or not) or a list value", 400, "rejected", LLHTTP, 400
    ),
    FramingRule(
        "cl-invalid", "Content-Length that is not 1*DIGIT (`+3`, `0x3`, `3 4`)", 400, "rejected", LLHTTP, 400
    ),
    FramingRule(
        "obs-fold",
        "a header line folded onto the next (obs-fold)",
        400,
        "rejected (RFC 9112 5.2)",
        LLHTTP,
        400,
    ),
    FramingRule(
        "bare-lf",
        "a line ending in LF without CR (request line, headers, chunk lines)",
        400,
        "rejected",
        LLHTTP,
        0,
        "nginx accepts bare LF line endings (RFC 9112 2.2 allows it)",
    ),
    FramingRule(
        "bare-cr", "a CR not followed by LF anywhere in the head", 400, "rejected (RFC 9112 2.2)", LLHTTP, 400
    ),
    FramingRule(
        "chunk-ext",
        "chunk extensions (`3;name=value`)",
        0,
        "accepted and dropped: the gateway re-frames the body with its own chunk lines",
        GATEWAY,
        0,
    ),
    FramingRule(
        "chunk-line-long",
        "a chunk-size line with a long extension (8,000 bytes)",
        0,
        "accepted and dropped like any extension: llhttp streams it without buffering (no memory), "
        "and extension bytes are not body bytes, so a client that sends only those is cut by "
        "`min_body_rate` (408)",
        GATEWAY,
        0,
    ),
    FramingRule(
        "chunk-ext-bare-lf",
        "a bare LF inside a chunk extension",
        400,
        "rejected",
        LLHTTP,
        400,
    ),
    FramingRule(
        "chunk-size-invalid",
        "a chunk size that is not hex digits (`0x3`, `-3`, `3 `, `zz`)",
        400,
        "rejected",
        LLHTTP,
        400,
    ),
    FramingRule("chunk-size-overflow", "a chunk size over 64 bits", 400, "rejected", LLHTTP, 400),
    FramingRule(
        "chunk-data-crlf",
        "chunk data not followed by CRLF (a chunk longer than its size)",
        400,
        "rejected",
        LLHTTP,
        400,
    ),
    FramingRule(
        "trailers",
        "a trailer section after the last chunk",
        0,
        "accepted and dropped (not forwarded); trailers count toward the head size limit (431)",
        GATEWAY,
        0,
    ),
    FramingRule(
        "header-name-invalid",
        "whitespace between a header name and the colon; NUL, another control byte or a space in a name",
        400,
        "rejected (RFC 9112 5.1 MUST)",
        LLHTTP,
        400,
    ),
    FramingRule(
        "ctl-in-value",
        "NUL or another control byte (not HTAB) in a header value",
        400,
        "rejected",
        LLHTTP,
        502,
        "nginx rejects NUL but passes other control bytes on to the instance (here the instance's "
        "parser refused them and nginx answered 502)",
    ),
    FramingRule(
        "absolute-form",
        "an absolute-form target (`GET http://host/path`)",
        0,
        "normalized: the path and query are forwarded in origin-form and the Host header is "
        "replaced by the target's authority (RFC 9112 3.2.2)",
        GATEWAY,
        0,
    ),
    FramingRule(
        "absolute-form-other",
        "an absolute-form target with a scheme other than http(s)",
        400,
        "rejected",
        GATEWAY,
        0,
        "nginx ignores the scheme and proxies the path",
    ),
    FramingRule(
        "asterisk-form",
        "the asterisk-form target (`OPTIONS *`)",
        400,
        "rejected: the gateway has no server-wide options to report",
        GATEWAY,
        400,
    ),
    FramingRule(
        "host-twice", "more than one Host header line", 400, "rejected (RFC 9112 3.2 MUST)", GATEWAY, 400
    ),
    FramingRule(
        "host-missing", "an HTTP/1.1 request without Host", 400, "rejected (RFC 9112 3.2 MUST)", GATEWAY, 400
    ),
    FramingRule("host-invalid", "a Host value that is not host[:port]", 400, "rejected", GATEWAY, 400),
    FramingRule(
        "version",
        "HTTP/0.9, HTTP/1.2+, HTTP/2 preface on an HTTP/1 port",
        400,
        "rejected",
        GATEWAY,
        0,
        "nginx takes HTTP/1.2 as HTTP/1.1 and proxies it",
    ),
    FramingRule(
        "http10-keep-alive",
        "HTTP/1.0 with `Connection: keep-alive`",
        0,
        "accepted; the connection is kept and the answer says `Connection: keep-alive`",
        GATEWAY,
        0,
        "nginx answers and closes (it does not keep HTTP/1.0 connections alive by default)",
    ),
    FramingRule(
        "pipelined",
        "several requests in one write",
        0,
        "accepted; answered in order, each one sent to an instance only after the previous is done",
        GATEWAY,
        0,
    ),
    FramingRule(
        "expect-over-limit",
        "`Expect: 100-continue` with a Content-Length over the body limit",
        413,
        "rejected before any `100 Continue`, then closed; the body is never read",
        GATEWAY,
        413,
    ),
    FramingRule(
        "expect-unknown",
        "an Expect value other than 100-continue",
        417,
        "rejected (RFC 9110 10.1.1)",
        GATEWAY,
        0,
        "nginx ignores unknown expectations",
    ),
    FramingRule(
        "head-too-large",
        "request headers (or trailers) over `max_head_bytes`, or more than `max_header_count` lines",
        431,
        "rejected",
        GATEWAY,
        400,
        "nginx answers 400 `Request Header Or Cookie Too Large`",
    ),
    FramingRule("target-too-long", "a request target over `max_head_bytes`", 414, "rejected", GATEWAY, 414),
    FramingRule(
        "method-unknown",
        "a method llhttp does not know (`FOO /`)",
        400,
        "rejected",
        LLHTTP,
        502,
        "nginx proxies any token method (here the instance's parser refused it and nginx answered 502)",
    ),
)

BY_NAME: dict[str, FramingRule] = {rule.name: rule for rule in RULES}

_HOST_RE = re.compile(rb"^[A-Za-z0-9._\-~!$&'()*+,;=%]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_ABSOLUTE_RE = re.compile(rb"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^#]*)")

# llhttp's error texts (httptools passes them on) -> the rule broken; the first match wins
_PARSER_ERRORS: tuple[tuple[str, str], ...] = (
    ("can't be present with", "cl-and-te"),
    ("Content-Length can't", "cl-and-te"),
    ("Duplicate Content-Length", "cl-twice"),
    ("Invalid character in Content-Length", "cl-invalid"),
    ("Invalid `Transfer-Encoding` header value", "te-twice"),
    ("Transfer-Encoding", "te-not-chunked"),
    ("whitespace after header value", "obs-fold"),
    ("Expected CRLF", "bare-lf"),
    ("Missing expected CR after chunk extension", "chunk-ext-bare-lf"),
    ("Missing expected CR", "bare-lf"),
    ("Missing expected LF", "bare-cr"),
    ("Expected LF after chunk data", "chunk-data-crlf"),
    ("chunk extension", "chunk-ext-bare-lf"),
    ("Invalid character in chunk size", "chunk-size-invalid"),
    ("Chunk size overflow", "chunk-size-overflow"),
    ("Invalid header token", "header-name-invalid"),
    ("Invalid header value char", "ctl-in-value"),
    ("Invalid HTTP version", "version"),
    ("PRI/Upgrade", "version"),
    ("Invalid method", "method-unknown"),
)


@dataclass(slots=True)
class Normalized:
    """What `check_head` changed: the target in origin-form and the Host it implies (absolute-form)."""

    url: bytes
    host: bytes | None  # replaces every Host header when not None


def parser_error_rule(text: str) -> FramingRule | None:
    """The rule an llhttp error message reports, or None when the text is not one we know."""
    for needle, name in _PARSER_ERRORS:
        if needle in text:
            return BY_NAME[name]
    return None


def check_head(
    method: bytes, version: str, url: bytes, headers: list[tuple[bytes, bytes]], max_body_bytes: int
) -> FramingRule | Normalized | None:
    """The rule a parsed head breaks, or how to normalize it (absolute-form), or None: all well.

    `headers` are as the parser gave them (names in their case, values without OWS at the start).
    Runs once per request; every check is a scan of the header list.
    """
    if version not in ("1.1", "1.0"):
        return BY_NAME["version"]
    hosts: list[bytes] = []
    te: bytes | None = None
    content_length = -1
    expect: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            hosts.append(value.strip())
        elif lower == b"transfer-encoding":
            te = value
        elif lower == b"content-length":
            content_length = int(value)  # llhttp checked the digits
        elif lower == b"expect":
            expect = value.strip().lower()
    if len(hosts) > 1:
        return BY_NAME["host-twice"]
    if te is not None:
        if version == "1.0":
            return BY_NAME["te-http10"]
        if te.strip().lower() != b"chunked":
            return BY_NAME["te-not-chunked"]
    if expect is not None:
        if expect != b"100-continue":
            return BY_NAME["expect-unknown"]
        if content_length > max_body_bytes:
            return BY_NAME["expect-over-limit"]
    if method == b"CONNECT":
        return None  # authority-form; answered 405 (admission.method_verdict)
    if url == b"*":
        return BY_NAME["asterisk-form"]
    if not url.startswith(b"/"):
        m = _ABSOLUTE_RE.match(url)
        if m is None or m.group(1).lower() not in (b"http", b"https") or not m.group(2):
            return BY_NAME["absolute-form-other"]
        authority = m.group(2)
        if b"@" in authority or not _HOST_RE.match(authority):
            return BY_NAME["host-invalid"]
        path = m.group(3) or b"/"
        if not path.startswith(b"/"):
            path = b"/" + path
        return Normalized(path, authority)
    if not hosts:
        if version == "1.1":
            return BY_NAME["host-missing"]
    elif not _HOST_RE.match(hosts[0]):
        return BY_NAME["host-invalid"]
    return None


def apply_host(headers: list[tuple[bytes, bytes]], host: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with every Host line replaced by one `Host: host` (absolute-form normalization)."""
    kept = [(n, v) for n, v in headers if n.lower() != b"host"]
    kept.append((b"Host", host))
    return kept
