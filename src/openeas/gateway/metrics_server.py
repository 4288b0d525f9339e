"""The metrics listener: `GET /metrics` (Prometheus text) and `GET /stats` (JSON), 404 otherwise.

A separate socket from the data-plane listeners (default 127.0.0.1 on an ephemeral port, or
`listen.metrics` of the gateway record), so it is never reachable through the Internet or VPC
endpoints. A tiny asyncio Protocol with the httptools parser; the body is rendered per request by
the `render` callback, which is the only place the counters are formatted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import httptools

log = logging.getLogger("openeas.gateway")

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = b"application/json"
MAX_URL = 4096

# "/metrics" or "/stats" -> the body
Render = Callable[[str], bytes]


class MetricsConnection(asyncio.Protocol):
    """One scraper connection: keep-alive, one request at a time."""

    def __init__(self, render: Render) -> None:
        self.render = render
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b"text/plain", b"bad request\n", close=True)

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            raise ValueError("URL too long")

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        keep = self.parser.should_keep_alive()
        if method not in (b"GET", b"HEAD"):
            self._send(405, b"text/plain", b"GET /metrics or GET /stats\n", close=not keep)
            return
        if path == b"/metrics":
            ctype = PROMETHEUS_TYPE
        elif path == b"/stats":
            ctype = JSON_TYPE
        else:
            self._send(404, b"text/plain", b"not found: GET /metrics or GET /stats\n", close=not keep)
            return
        try:
            body = self.render(path.decode())
        except Exception:
            log.exception("cannot render %s", path.decode())
            self._send(500, b"text/plain", b"cannot render the metrics; see the gateway log\n", close=True)
            return
        self._send(200, ctype, b"" if method == b"HEAD" else body, close=not keep, length=len(body))

    def _send(self, status: int, ctype: bytes, body: bytes, close: bool, length: int | None = None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}.get(
            status, b"Error"
        )
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            reason,
            ctype,
            len(body) if length is None else length,
            b"Connection: close\r\n" if close else b"",
        )
        transport.write(head + body)
        if close:
            transport.close()
