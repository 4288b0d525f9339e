"""WebSocket pass-through: after an instance answers an upgrade with 101, relay raw bytes both ways.

A `GET` with `Connection: Upgrade` and `Upgrade: websocket` is admitted like any request (auth,
ACL, route, limits, pick: exchange.py) and sent to the instance with those two headers kept.
When the instance answers `101 Switching Protocols`, the exchange hands both connections to a
`Tunnel`: from then on bytes are copied as they come, client -> instance and instance -> client,
with no HTTP parsing, until either side closes (the other is closed too) or nothing moved for the
gateway's idle timeout (`Gateway.idle_timeout_s`, checked by its once-a-second sweep). Flow
control stays as for a streamed response: a full write buffer on one side pauses reading on the
other (the exchange keeps both links while the tunnel lives).

The instance connection of a tunnel is never pooled: it is closed when the tunnel ends. Any other
`Upgrade` value (h2c, ...), or an upgrade on a method other than GET, is forwarded as a plain
request without the `Upgrade` header (headers.py drops it).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from openeas.gateway.headers import CRLF

# response headers of the 101 not passed on: the gateway writes its own Connection/Upgrade
_DROP_101 = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"upgrade",
        b"transfer-encoding",
        b"content-length",
        b"x-request-id",
    }
)


def wants_websocket(method: bytes, parser_upgrade: bool, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request head asks for a WebSocket upgrade the gateway passes: a GET that the
    parser flagged as an upgrade (`Connection: Upgrade` + `Upgrade`) whose `Upgrade` names
    `websocket`."""
    if method != b"GET" or not parser_upgrade:
        return False
    for name, value in headers:
        if name.lower() == b"upgrade":
            tokens = (token.strip().split(b"/", 1)[0] for token in value.lower().split(b","))
            if b"websocket" in tokens:
                return True
    return False


def upgrade_request_head(head: bytes) -> bytes:
    """The forwarded request head (headers.request_head, ending in an empty line) with the
    upgrade headers it dropped as hop-by-hop put back."""
    return head[:-2] + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


def upgrade_response_head(reason: bytes, headers: list[tuple[bytes, bytes]], request_id: bytes) -> bytes:
    """The 101 head for the client: the instance's headers (Sec-WebSocket-Accept, -Protocol,
    -Extensions, ...) without hop-by-hop ones, the upgrade headers and X-Request-Id."""
    parts = [b"HTTP/1.1 101 ", reason or b"Switching Protocols", CRLF]
    for name, value in headers:
        if name.lower() not in _DROP_101:
            parts += (name, b": ", value, CRLF)
    parts += (b"Connection: Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: ", request_id, b"\r\n\r\n")
    return b"".join(parts)


class ClientSide(Protocol):
    """The client end of a tunnel (`client_connection.ClientConnection`)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class UpstreamSide(ClientSide, Protocol):
    """The instance end of a tunnel (`upstream.UpstreamConnection`)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Tunnel:
    """Two connections joined after a 101; `last_active` is loop time of the last byte moved."""

    __slots__ = ("bytes_down", "bytes_up", "client", "closed", "last_active", "loop", "up")

    def __init__(self, client: ClientSide, up: UpstreamSide, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.up = up
        self.loop = loop
        self.last_active = loop.time()
        self.bytes_up = 0  # client -> instance
        self.bytes_down = 0  # instance -> client
        self.closed = False

    def from_client(self, data: bytes) -> None:
        if not self.closed and data:
            self.bytes_up += len(data)
            self.last_active = self.loop.time()
            self.up.write(data)

    def from_upstream(self, data: bytes) -> None:
        if not self.closed and data:
            self.bytes_down += len(data)
            self.last_active = self.loop.time()
            self.client.write(data)

    def idle_for(self, now: float) -> float:
        return now - self.last_active

    def close(self) -> None:
        """One side closed (or the tunnel went idle, or the gateway stops): close both."""
        if self.closed:
            return
        self.closed = True
        self.up.close()
        self.client.close()
