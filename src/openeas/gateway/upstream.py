"""Connections to instances: one asyncio Protocol per TCP connection, pooled per instance.

An `UpstreamConnection` parses responses with `httptools.HttpResponseParser` and hands what it
reads to the request it currently serves (`exchange.Exchange`, seen here as a `ResponseSink`);
between requests it sits in its instance's idle list (`instances.UpstreamState.idle`, seen here as
a `Pool`), where an EOF or error from the instance removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from openeas.gateway.flow import PAUSE_UPSTREAM

if TYPE_CHECKING:
    from openeas.gateway.tunnel import Tunnel

MAX_IDLE_PER_UPSTREAM = 1024
log = logging.getLogger("openeas.gateway")


class Pool(Protocol):
    """The instance a connection belongs to (`instances.UpstreamState`): its idle connections."""

    addr: str  # host:port, for log lines
    idle: list[UpstreamConnection]
    retired: bool  # gone from the routing snapshot: connections are closed, not pooled


class Pausable(Protocol):
    def pause(self, bit: int) -> None: ...

    def resume(self, bit: int) -> None: ...


class ResponseSink(Protocol):
    """The request a connection serves (`exchange.Exchange`): where the response goes."""

    resp_head: bytes | None  # a response head not yet written to the client

    @property
    def client(self) -> Pausable: ...

    def upstream_headers(
        self,
        conn: UpstreamConnection,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None: ...

    def upstream_upgrade(
        self, conn: UpstreamConnection, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bool: ...

    def upstream_body(self, data: bytes) -> None: ...

    def flush_head(self) -> None: ...

    def upstream_done(self, conn: UpstreamConnection, keep_alive: bool) -> None: ...

    def upstream_lost(self, conn: UpstreamConnection, protocol_error: bool) -> None: ...


class _Stray(Exception):
    """Bytes from an instance when no request is waiting for them."""


class _HeadTooLarge(Exception):
    """The instance's status line and headers are over the gateway's max_response_head_bytes."""


DEFAULT_HEAD_LIMIT = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "closed",
        "error",
        "exchange",
        "head_limit",
        "head_size",
        "headers",
        "idle_since",
        "in_1xx",
        "parser",
        "read_paused",
        "reason",
        "received",
        "state",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, state: Pool, head_limit: int = DEFAULT_HEAD_LIMIT) -> None:
        self.state = state
        self.head_limit = head_limit
        self.head_size = 0
        self.error = ""  # why the response was not valid HTTP (the 502 message names it)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: ResponseSink | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.received = False  # any byte of a response arrived while serving the current exchange
        self.in_1xx = False
        self.idle_since = 0.0
        self.read_paused = False
        self.write_paused = False
        self.closed = False
        self.tunnel: Tunnel | None = None  # after a 101: raw bytes, never pooled again (tunnel.py)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        if self.exchange is None:
            self.close()  # an idle connection must stay silent
            return
        self.received = True
        try:
            self.parser.feed_data(data)
            ex = self.exchange
            if ex is not None and ex.resp_head is not None:
                ex.flush_head()
        except httptools.HttpParserUpgrade as exc:
            if self.tunnel is not None:  # the 101 the exchange asked for: the rest is tunnel bytes
                self.tunnel.from_upstream(data[int(exc.args[0]) :])
                return
            ex = self.exchange  # a 101 nobody asked for
            self.close()
            if ex is not None:
                ex.upstream_lost(self, protocol_error=True)
        except httptools.HttpParserError as exc:
            ex = self.exchange
            self.close()
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self.error = f"status line and headers over {self.head_limit} bytes"
            elif cause is None:
                self.error = str(exc) or "not HTTP/1.x"
            if not isinstance(cause, _Stray | _HeadTooLarge | None):
                log.warning("error while handling a response from %s: %r", self.state.addr, exc.__context__)
            if ex is not None:
                self.exchange = None
                ex.upstream_lost(self, protocol_error=True)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.exchange = None
            self.tunnel.close()
            return
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self, protocol_error=False)
        else:
            with contextlib.suppress(ValueError):
                self.state.idle.remove(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client.pause(PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client.resume(PAUSE_UPSTREAM)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.exchange is None:
            raise _Stray
        self.headers = []
        self.reason = b""
        self.head_size = 0

    def on_status(self, status: bytes) -> None:
        self.reason += status
        self.head_size += len(status)
        if self.head_size > self.head_limit:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))  # trailers too: a response's trailers are few
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.head_limit:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            raise _Stray
        status = self.parser.get_status_code()
        if status == 101 and ex.upstream_upgrade(self, self.reason, self.headers):
            self.in_1xx = True  # the message "ends" with the head; the parser stops after it
            return
        if status < 200:
            self.in_1xx = True  # 100 Continue / 103 Early Hints: not forwarded
            return
        ex.upstream_headers(self, status, self.reason, self.headers, self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            raise _Stray
        ex.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.in_1xx:
            self.in_1xx = False
            return
        ex = self.exchange
        if ex is None:
            raise _Stray
        ex.upstream_done(self, self.parser.should_keep_alive())

    # -- helpers ---------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


def take_idle(state: Pool, now: float, max_idle_s: float) -> UpstreamConnection | None:
    """A pooled connection that is still open and was used recently, or None."""
    idle = state.idle
    while idle:
        conn = idle.pop()
        if conn.closed or now - conn.idle_since > max_idle_s:
            conn.close()
            continue
        return conn
    return None


def release(conn: UpstreamConnection, now: float) -> None:
    """Put a connection whose exchange finished cleanly back into its instance's pool."""
    conn.exchange = None
    state = conn.state
    if conn.closed or state.retired or len(state.idle) >= MAX_IDLE_PER_UPSTREAM:
        conn.close()
        return
    conn.received = False
    conn.idle_since = now
    conn.resume_reading()
    state.idle.append(conn)


def prune_idle(state: Pool, now: float, max_idle_s: float) -> None:
    """Close pooled connections idle longer than `max_idle_s` (the oldest are at the bottom)."""
    idle = state.idle
    n_stale = 0
    while n_stale < len(idle) and now - idle[n_stale].idle_since > max_idle_s:
        n_stale += 1
    if n_stale:
        stale = idle[:n_stale]
        del idle[:n_stale]
        for conn in stale:
            conn.close()
