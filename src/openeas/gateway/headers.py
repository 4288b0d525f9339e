"""Header rewriting: what the gateway forwards of a request and a response, and what it adds (no I/O).

Request side (`read_request_head`, `request_head`): hop-by-hop headers (and those named in
`Connection`) are dropped; `Authorization` is read and never forwarded; `Content-Length`,
`Transfer-Encoding: chunked`, `Expect: 100-continue` and `X-Forwarded-For` are noted; the head
sent to the instance is the method, the forwarded target, the kept headers, `Host` (added for
HTTP/1.0 callers without one), `X-Forwarded-For` (the caller appended) and `X-Request-Id`.

Response side (`response_head`): hop-by-hop headers and the instance's `X-Request-Id` are dropped;
the gateway frames the body itself (the instance's `Content-Length`, else chunked for HTTP/1.1,
else until close) and adds `X-Request-Id` and `Connection`.

Mirror copies (`mirror_head`): the forwarded head with the captured body's length,
`X-Eas-Mirror: 1` and `Connection: close`.

Forwarded header lines are kept as a flat list, four items per header (name, ": ", value, CRLF),
so the head is one `b"".join`.
"""

from __future__ import annotations

from typing import Protocol

CRLF = b"\r\n"

# request header handling, by lower-case name
_DROP = 0  # hop-by-hop or re-written by the gateway
_AUTH = 1
_LENGTH = 2
_TE = 3
_EXPECT = 4
_CONNECTION = 5
_XFF = 6
_HOST = 7
_REQ_SPECIAL: dict[bytes, int] = {
    b"authorization": _AUTH,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"expect": _EXPECT,
    b"connection": _CONNECTION,
    b"x-forwarded-for": _XFF,
    b"host": _HOST,
    b"keep-alive": _DROP,
    b"proxy-connection": _DROP,
    b"proxy-authorization": _DROP,
    b"proxy-authenticate": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"x-request-id": _DROP,
}
# response headers the gateway does not pass on (it frames the body and adds X-Request-Id)
_RESP_DROP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
        b"x-request-id",
    }
)
_CONNECTION_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})


class RequestHead(Protocol):
    """Where `read_request_head` puts what it found (`exchange.Exchange`)."""

    fwd: list[bytes]
    authorization: bytes | None
    content_length: int
    has_host: bool
    body_chunked: bool
    expect_continue: bool
    xff: bytes | None


def read_request_head(req: RequestHead, headers: list[tuple[bytes, bytes]]) -> None:
    """Sort the request's headers: the forwarded lines into `req.fwd`, the rest into its fields."""
    fwd = req.fwd
    special = _REQ_SPECIAL
    extra_drop: list[bytes] | None = None
    for name, value in headers:
        kind = special.get(name.lower())
        if kind is None:
            fwd += (name, b": ", value, CRLF)
        elif kind == _AUTH:
            req.authorization = value
        elif kind == _LENGTH:
            req.content_length = int(value)  # the parser has validated it
            fwd += (name, b": ", value, CRLF)
        elif kind == _HOST:
            req.has_host = True
            fwd += (name, b": ", value, CRLF)
        elif kind == _TE:
            req.body_chunked = b"chunked" in value.lower()
        elif kind == _EXPECT:
            req.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == _XFF:
            req.xff = value if req.xff is None else req.xff + b", " + value
        elif kind == _CONNECTION:
            for token in value.lower().split(b","):
                token = token.strip()
                if token and token not in _CONNECTION_TOKENS:
                    if extra_drop is None:
                        extra_drop = []
                    extra_drop.append(token)
    if extra_drop:
        req.fwd = drop_named(fwd, extra_drop)


def drop_named(fwd: list[bytes], names: list[bytes]) -> list[bytes]:
    """`fwd` without the headers whose lower-case name is in `names` (listed in `Connection`)."""
    kept: list[bytes] = []
    for i in range(0, len(fwd), 4):
        if fwd[i].lower() not in names:
            kept += fwd[i : i + 4]
    return kept


def request_head(
    method: bytes,
    target: bytes,
    fwd: list[bytes],
    has_host: bool,
    xff: bytes | None,
    peer: bytes,
    request_id: bytes,
    body_chunked: bool,
) -> bytes:
    """The request head sent to the instance."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n", *fwd]
    if not has_host:  # HTTP/1.0 callers may leave it out; HTTP/1.1 instances need one
        parts.append(b"Host: localhost\r\n")
    xff = peer if xff is None else xff + b", " + peer
    parts += (b"X-Forwarded-For: ", xff, b"\r\nX-Request-Id: ", request_id, CRLF)
    if body_chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(CRLF)
    return b"".join(parts)


def response_head(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    no_body: bool,
    http10: bool,
    keep_alive: bool,
    request_id: bytes,
) -> tuple[bytes, bool, bool, bool]:
    """The response head for the client and how its body is framed.

    `no_body`: a HEAD request or a 204/304; `keep_alive`: the connection stays open as far as the
    request and the client connection go. Returns (head, chunked: the gateway chunks the body,
    close: the connection closes after it, until_close: the instance's close ends the body)."""
    has_length = False
    chunked = False
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    drop = _RESP_DROP
    for name, value in headers:
        lname = name.lower()
        if lname in drop:
            if lname == b"transfer-encoding":
                chunked = True
            continue
        if lname == b"content-length":
            has_length = True
        parts += (name, b": ", value, CRLF)
    resp_chunked = resp_close = until_close = False
    if not no_body and not has_length:
        if not chunked:
            until_close = True
        if http10:
            resp_close = True  # no chunked framing for HTTP/1.0: the close ends the body
        else:
            resp_chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
    parts += (b"X-Request-Id: ", request_id, CRLF)
    close = resp_close or not keep_alive
    if close:
        parts.append(b"Connection: close\r\n\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n\r\n")
    else:
        parts.append(CRLF)
    return b"".join(parts), resp_chunked, close, until_close


def mirror_head(
    method: bytes,
    target: bytes,
    fwd: list[bytes],
    has_host: bool,
    content_length: int,
    body_chunked: bool,
    request_id: bytes,
    size: int,
) -> bytes:
    """A mirror copy's request head: the forwarded headers (no Authorization), a Content-Length
    for the captured body, `Connection: close`, and the main request's id in X-Request-Id."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for i in range(0, len(fwd), 4):
        if fwd[i].lower() != b"content-length":
            parts += fwd[i : i + 4]
    if not has_host:
        parts.append(b"Host: localhost\r\n")
    if size or content_length >= 0 or body_chunked:
        parts.append(b"Content-Length: %d\r\n" % size)
    parts += (b"X-Request-Id: ", request_id, b"\r\nX-Eas-Mirror: 1\r\nConnection: close\r\n\r\n")
    return b"".join(parts)
