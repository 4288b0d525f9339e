"""Sanity checks before measuring: every path answers 200 with the upstream's JSON, bodies are
read, and the gateway's auth and 1 MiB body limit are on (401 and 413)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    will_close: bool


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    auth: str = "",
    conn: http.client.HTTPConnection | None = None,
    timeout: float = 15.0,
) -> Reply:
    parts = urllib.parse.urlsplit(url)
    own = conn is None
    c = conn or http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        headers["Authorization"] = auth
    try:
        c.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
        resp = c.getresponse()
        data = resp.read()
        return Reply(resp.status, data, resp.will_close)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(-1, repr(exc).encode(), True)
    finally:
        if own:
            c.close()


def post_status_raw(url: str, body: bytes, auth: str, timeout: float = 15.0) -> int:
    """POST over a raw socket and return the status, even when the server answers early and
    closes while the body is still being sent (what a 413 usually does)."""
    parts = urllib.parse.urlsplit(url)
    head = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if auth:
        head.append(f"Authorization: {auth}")
    data = b""
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        with contextlib.suppress(OSError):
            for _ in range(1000):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n" in data:
                    break
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return -1


def run_checks(
    urls: dict[str, dict[str, str]], token: str, expected: bytes, bodies: dict[str, bytes], over_limit: bytes
) -> list[dict[str, Any]]:
    """urls: path -> {"get": url, "post": url}. Returns one row per check (ok True/False)."""
    rows: list[dict[str, Any]] = []

    def add(what: str, ok: bool, detail: str) -> None:
        rows.append({"check": what, "ok": ok, "detail": detail})

    for path, u in urls.items():
        auth = token if path.startswith("gateway") else ""
        r = call(u["get"], auth=auth)
        add(
            f"{path}: GET answers 200 with the upstream JSON",
            r.status == 200 and r.body == expected,
            f"status {r.status}, {len(r.body)} bytes",
        )
        for name, body in bodies.items():
            parts = urllib.parse.urlsplit(u["post"])
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
            try:
                r1 = call(u["post"], "POST", body, auth, conn=conn)
                # A second request on the same connection proves the body was consumed.
                r2 = call(u["get"], auth=auth, conn=conn) if not r1.will_close else Reply(0, b"", True)
            finally:
                conn.close()
            add(
                f"{path}: {name} answers 200, then the same connection serves a GET",
                r1.status == 200 and r1.body == expected and r2.status == 200,
                f"POST status {r1.status}, keep-alive {not r1.will_close}, next GET status {r2.status}",
            )
    gw = urls["gateway"]
    r = call(gw["get"])
    add("gateway: no token -> 401 (auth on)", r.status == 401, f"status {r.status}")
    r = call(gw["get"], auth="wrong-token-" + "x" * 28)
    add("gateway: wrong token -> 401 (auth on)", r.status == 401, f"status {r.status}")
    status = post_status_raw(gw["post"], over_limit, token)
    add(f"gateway: {len(over_limit)}-byte body -> 413 (1 MiB limit on)", status == 413, f"status {status}")
    status = post_status_raw(urls["nginx"]["post"], over_limit, "")
    add(f"nginx: {len(over_limit)}-byte body -> 413 (same limit)", status == 413, f"status {status}")
    return rows
