"""Online debug: send one request to a service through its gateway and report what came back.

`POST /api/v2/services/{region}/{name}/debug` with

    {"method": "POST", "path": "/v1/chat/completions", "headers": {"Content-Type": "..."},
     "body": "...text...", "endpoint": "internet" | "vpc", "timeout": 30}

(every field optional) forwards `method <endpoint><path>` with `Authorization: <service token>`
(unless `headers` gives its own Authorization, to try a wrong one) and answers

    {"url", "method", "status", "reason", "headers": [[name, value], ...], "body",
     "body_encoding": "text" | "base64", "body_bytes", "body_truncated", "elapsed_ms", "note"}

The request goes to the endpoint users are shown (the gateway's advertised URL), so it passes
the same ACL, auth, limits and routing as a user's call. Bounds: the request body is at most
MAX_REQUEST_BODY bytes, the answer is read up to MAX_RESPONSE_BODY bytes, the whole exchange
lasts at most `timeout` seconds (up to MAX_TIMEOUT_S); a body cut short by either says so in
`note`. A compressed answer is shown decompressed; a body that is not UTF-8 comes as base64.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from openeas.control.errors import ApiError

MAX_REQUEST_BODY = 1024 * 1024  # the shared gateway's body limit
MAX_RESPONSE_BODY = 1024 * 1024
MAX_PATH = 2048
MAX_HEADERS = 64
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 120.0
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ENDPOINTS = ("internet", "vpc")
# Set by the HTTP client itself, or meaningless for one request.
DROPPED_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer"}
)


@dataclass(frozen=True)
class DebugCall:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    endpoint: str | None  # None: the Internet endpoint, else the VPC one
    timeout_s: float


def _bad(message: str) -> ApiError:
    return ApiError(400, "InvalidRequest", message)


def parse_debug_call(data: Any) -> DebugCall:
    """Validate the debug request; errors say which field is wrong and what is expected."""
    if not isinstance(data, dict):
        raise _bad('send a JSON object: {"method", "path", "headers", "body", "endpoint", "timeout"}')
    unknown = set(data) - {"method", "path", "headers", "body", "endpoint", "timeout"}
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(sorted(unknown))}; known: method, path, headers, body, "
                   "endpoint, timeout")  # fmt: skip
    method = data.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _bad(f"method is one of {', '.join(METHODS)}")
    path = data.get("path", "")
    if not isinstance(path, str) or len(path) > MAX_PATH:
        raise _bad(f"path is a string of at most {MAX_PATH} characters, such as /v1/chat/completions")
    if path and not path.startswith(("/", "?")):
        raise _bad("path is appended to the endpoint: start it with / (or ? for a query only)")
    if any(c.isspace() or ord(c) < 32 or c == "#" for c in path):
        raise _bad("path has a space, a control character or a #; percent-encode them")
    if any(seg in (".", "..") for seg in path.split("?", 1)[0].split("/")):
        raise _bad("path segments . and .. are not allowed: the path stays under the service's endpoint")
    headers = _headers(data.get("headers", {}))
    body = data.get("body", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise _bad("body is a string (the exact request body, e.g. JSON text)")
    raw = body.encode()
    if len(raw) > MAX_REQUEST_BODY:
        raise _bad(f"body is {len(raw)} bytes; the debug box sends at most {MAX_REQUEST_BODY} bytes")
    endpoint = data.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise _bad('endpoint is "internet" or "vpc"')
    timeout = data.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise _bad(f"timeout is a number of seconds, more than 0 and at most {MAX_TIMEOUT_S:g}")
    if raw and not any(k.lower() == "content-type" for k, _ in headers):
        headers = (*headers, ("Content-Type", _guess_content_type(body)))
    return DebugCall(method.upper(), path, headers, raw, endpoint, float(timeout))


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        pairs = [(p[0], p[1]) for p in value]
    else:
        raise _bad('headers is an object {"Name": "value"} or a list of [name, value] pairs')
    if len(pairs) > MAX_HEADERS:
        raise _bad(f"at most {MAX_HEADERS} headers")
    out = []
    for name, val in pairs:
        if not isinstance(name, str) or not isinstance(val, str):
            raise _bad("header names and values are strings")
        if not name or any(c in name for c in ' \t\r\n:"(),/;<=>?@[\\]{}') or not name.isascii():
            raise _bad(f"{name!r} is not a valid header name")
        if "\r" in val or "\n" in val:
            raise _bad(f"the value of header {name} has a line break")
        if name.lower() not in DROPPED_HEADERS:
            out.append((name, val))
    return tuple(out)


def _guess_content_type(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


def pick_endpoint(endpoints: dict[str, str | None], wanted: str | None, service: str) -> tuple[str, str]:
    """(which, base URL) of the endpoint to call: the one asked for, else Internet, else VPC."""
    order = [wanted] if wanted else list(ENDPOINTS)
    for which in order:
        url = endpoints.get(which)
        if url:
            return which, url
    what = f"a{'n Internet' if wanted == 'internet' else ' VPC'} endpoint" if wanted else "an endpoint"
    raise ApiError(
        409,
        "NoEndpoint",
        f"service '{service}' has no {what}: its gateway does not serve that access (or is gone)",
    )


async def forward(
    base_url: str, which: str, token: str, call: DebugCall, max_body: int = MAX_RESPONSE_BODY
) -> dict[str, Any]:
    """Send `call` to `base_url + call.path` and describe the answer (see the module doc); the
    body is read up to `max_body` bytes."""
    url = base_url + call.path
    headers = list(call.headers)
    if not any(k.lower() == "authorization" for k, _ in headers):
        headers.append(("Authorization", token))
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + call.timeout_s
    note = ""
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=call.timeout_s) as client:
        request = client.build_request(call.method, url, headers=headers, content=call.body or None)
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except TimeoutError:
            raise ApiError(
                504,
                "DebugTimeout",
                f"no answer from {url} within {call.timeout_s:g} s (raise `timeout`, at most "
                f"{MAX_TIMEOUT_S:g} s, or see the service's logs)",
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                502,
                "DebugUnreachable",
                f"cannot reach the gateway at {base_url}: {type(exc).__name__}: {exc}",
            ) from None
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in response.aiter_bytes():
                    room = max_body - size
                    chunks.append(chunk[:room])
                    size += min(len(chunk), room)
                    if len(chunk) > room:
                        truncated = True
                        note = f"the body is longer than {max_body} bytes; the rest is left out"
                        break
        except TimeoutError:
            truncated = True
            note = f"the body was still arriving after {call.timeout_s:g} s; what came until then is shown"
        except httpx.HTTPError as exc:
            truncated = True
            note = f"the connection failed while reading the body ({type(exc).__name__})"
        finally:
            await response.aclose()
    elapsed_ms = (time.monotonic() - started) * 1000
    raw = b"".join(chunks)
    body, body_encoding = text_or_base64(raw, truncated)
    return {
        "url": url,
        "endpoint": which,
        "method": call.method,
        "status": response.status_code,
        "reason": response.reason_phrase,
        "headers": [[k, v] for k, v in response.headers.multi_items()],
        "body": body,
        "body_encoding": body_encoding,
        "body_bytes": len(raw),
        "body_truncated": truncated,
        "elapsed_ms": round(elapsed_ms, 1),
        "note": note,
    }


def text_or_base64(raw: bytes, truncated: bool) -> tuple[str, str]:
    """UTF-8 text when the body is text (a body cut short may end inside a character), else base64."""
    for cut in range(4 if truncated else 1):
        try:
            return raw[: len(raw) - cut].decode(), "text"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(raw).decode(), "base64"
