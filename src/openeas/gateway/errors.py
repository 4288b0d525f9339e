"""Error responses the gateway writes itself: JSON with a stable shape, no I/O here.

Every error body is `{"code": <status>, "reason": "<phrase>", "message": "<what and what to do>",
"request_id": "<id>"}` with `Content-Type: application/json` and an `X-Request-Id` header. The
parts that do not depend on the request (status line, fixed headers) are built once at import.
"""

from __future__ import annotations

import json

REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    450: "Queue Full",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n" % (code, phrase.encode())
    for code, phrase in REASONS.items()
}
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_body(status: int, message: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "code": status,
            "reason": REASONS.get(status, "Error"),
            "message": message,
            "request_id": request_id,
        }
    ).encode()


def error_response(
    status: int,
    message: str,
    request_id: bytes,
    close: bool,
    keep_alive_10: bool,
    extra_headers: bytes = b"",
) -> bytes:
    """The whole response (head and body) for an error the gateway answers itself.

    `close` adds `Connection: close`; `keep_alive_10` adds `Connection: keep-alive` for an
    HTTP/1.0 client that asked to keep the connection. `extra_headers` are complete header lines
    (`Retry-After: 1\r\n`, `Location: ...\r\n`).
    """
    body = error_body(status, message, request_id.decode())
    head = _STATUS_LINES.get(status) or (b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\n" % status)
    conn = b"Connection: close\r\n" if close else (b"Connection: keep-alive\r\n" if keep_alive_10 else b"")
    return b"%sContent-Length: %d\r\nX-Request-Id: %s\r\n%s%s\r\n%s" % (
        head,
        len(body),
        request_id,
        extra_headers,
        conn,
        body,
    )


def json_response(status: int, body: bytes, request_id: bytes, close: bool, keep_alive_10: bool) -> bytes:
    """A whole JSON response the gateway answers itself (service discovery)."""
    head = _STATUS_LINES.get(status) or (b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\n" % status)
    conn = b"Connection: close\r\n" if close else (b"Connection: keep-alive\r\n" if keep_alive_10 else b"")
    return b"%sContent-Length: %d\r\nX-Request-Id: %s\r\n%s\r\n%s" % (head, len(body), request_id, conn, body)


def msg_group_no_member(group: str) -> str:
    return (
        f"no member of service group '{group}' takes traffic now: every member has no ready "
        "instance or a weight of 0 (or -1). Check the members with `openeas group desc`."
    )


# Messages, kept together so their wording stays consistent.


def msg_not_found_service(service: str) -> str:
    return (
        f"service '{service}' was not found on this gateway. Check the service name and the API "
        "path: the endpoint is /api/predict/<service> followed by the model's own path "
        "(a wrong path is the most common cause of 404)."
    )


def msg_not_found_path(path: str) -> str:
    return (
        f"no service path matches '{path}'. Requests go to /api/predict/<service>[/<api path>]; "
        "check the service name and the API path."
    )


MSG_UNAUTHORIZED_MISSING = (
    "the Authorization header is missing: send the service token as `Authorization: <token>`, "
    "`Authorization: Bearer <token>`, or sign the request like the eas-prediction SDK does."
)
MSG_UNAUTHORIZED_WRONG = (
    "the token in the Authorization header is not valid for this service: use the token shown "
    "by `openeas endpoints <service>` (raw, Bearer, or the SDK's EAS signature)."
)


def msg_too_large(limit: int) -> str:
    return (
        f"the request body is larger than this gateway's limit of {format_size(limit)} "
        f"({limit} bytes): send a smaller body, or put large inputs in storage and send a reference."
    )


def msg_method(method: str) -> str:
    return f"method {method} is not allowed through the gateway; use GET, POST, PUT, DELETE, ..."


def msg_no_ready(service: str, status: str) -> str:
    return (
        f"no healthy upstream: service '{service}' has no ready instance (service status: {status}). "
        "Wait for it to become Running, or check `openeas desc` and `openeas logs`."
    )


def msg_no_instance_in_time(service: str, timeout_s: float) -> str:
    return (
        f"no healthy upstream: service '{service}' is scaled to zero and no instance became ready "
        f"within its keepalive of {round(timeout_s * 1000)} ms; one is starting: retry shortly "
        "(or raise metadata.rpc.keepalive above the instance's start time)."
    )


def msg_hold_full(service: str, limit: int) -> str:
    return (
        f"queue full: service '{service}' is scaled to zero and {limit} requests already wait for "
        "its first instance (metadata.rpc.max_queue_size). The request was shed; retry shortly."
    )


def msg_all_refused(service: str, status: str) -> str:
    return (
        f"no healthy upstream: service '{service}' has no ready instance that accepts connections "
        f"(its instances refused them; service status: {status}). Retry shortly; the service may be "
        "restarting."
    )


def msg_crashed(service: str) -> str:
    return (
        f"the instance of service '{service}' closed the connection before answering (it may have "
        "crashed on this request). Check `openeas logs` for the service."
    )


def msg_timeout(service: str, timeout_s: float) -> str:
    return (
        f"service '{service}' did not start answering within its keepalive of "
        f"{round(timeout_s * 1000)} ms (receive + queue + compute). Raise metadata.rpc.keepalive "
        "or make the request faster."
    )


def msg_connect_timeout(service: str) -> str:
    return (
        f"the gateway gave up connecting to an instance of service '{service}'. The instance may be "
        "overloaded or unreachable; retry."
    )


MSG_BAD_REQUEST = "the request is not valid HTTP/1.x; the connection is closed."
MSG_INTERNAL = (
    "the gateway failed while handling this request (a bug, written to the gateway's log); "
    "the connection is closed. Retry, and report the log's traceback if it persists."
)


def msg_acl_denied(address: str, gateway: str, kind: str) -> str:
    method, field = ("Internet", "internet_acl") if kind == "internet" else ("VPC (intranet)", "intranet_acl")
    return (
        f"the caller's address {address} is not in the allow-list of gateway '{gateway}' for "
        f"{method} access. To allow it, add its CIDR block (for example {_cidr(address)}) to the "
        f"gateway's `{field}` and update the gateway; changes apply to new connections at once."
    )


def _cidr(address: str) -> str:
    return f"{address}/128" if ":" in address else f"{address}/32"


def msg_token_limited(name: str, limit: int) -> str:
    return (
        f"too many tokens: service '{name}' has used its token rate limit of {limit} tokens per minute "
        "(networking.gateway_policy.token_rate_limit, prompt + completion). Retry after the time in "
        "Retry-After, or raise the limit."
    )


def msg_rate_limited(which: str, name: str, limit: int) -> str:
    what = {
        "service": f"service '{name}'",
        "group": f"service group '{name}'",
        "instance": f"every instance of service '{name}' (metadata.rpc.rate_limit)",
    }[which]
    return (
        f"too many requests: the {which} rate limit of {limit} requests per second for {what} is "
        "reached at this gateway. Retry after the time in Retry-After, or raise the limit."
    )


def msg_concurrency_limited(service: str, limit: int) -> str:
    return (
        f"too many requests: service '{service}' already has {limit} requests in flight, its "
        "concurrency limit at the gateway (networking.gateway_policy.concurrency_limit). Retry shortly."
    )


def msg_queue_full(service: str, workers: int, queue: int) -> str:
    return (
        f"queue full: every instance of service '{service}' is busy with {workers} requests "
        f"(metadata.rpc.worker_threads) and has {queue} more waiting (metadata.rpc.max_queue_size). "
        "The request was shed; retry later, or scale the service out."
    )


MSG_HTTPS_ONLY = "this port speaks HTTPS (TLS): the request came as plain HTTP. Use https:// in the endpoint."
MSG_REDIRECT = "this gateway serves HTTPS only: repeat the request at the URL in the Location header."


def msg_head_too_large(limit: int) -> str:
    return (
        f"the request line and headers are larger than {format_size(limit)}; send less in headers "
        "and the URL (put data in the body)."
    )


def msg_framing(rule: str, what: str) -> str:
    return (
        f"the request breaks the gateway's HTTP/1.1 framing rule '{rule}' ({what}); it was not "
        "forwarded and the connection is closed. Send plain RFC 9112 requests (docs/gateway.md, Framing)."
    )


def msg_target_too_long(limit: int) -> str:
    return f"the request target is longer than {format_size(limit)}; put data in the body, not the URL."


def msg_too_many_headers(limit: int) -> str:
    return f"the request has more than {limit} header lines; send fewer headers."


def msg_head_timeout(timeout_s: float) -> str:
    return (
        f"the request line and headers did not arrive within {timeout_s:g} s; the connection is "
        "closed. Send the whole request head at once."
    )


def msg_body_too_slow(rate: int, window_s: float) -> str:
    return (
        f"the request body arrived slower than {rate} bytes/s over {window_s:g} s; the connection "
        "is closed. Send the body without pauses."
    )


def msg_bad_response(service: str, why: str) -> str:
    return (
        f"the instance of service '{service}' sent an invalid HTTP response ({why}); nothing of it "
        "was passed on. Check `openeas logs` for the service."
    )


def format_size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"
