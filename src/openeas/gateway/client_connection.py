"""Accept and parse: one asyncio Protocol per client connection, parsed with httptools.

The first two steps of the request path (accept -> parse -> admit -> pick -> proxy -> finish, see
exchange.py). The connection checks its peer once at accept (`admission.connection_flags`),
turns bytes into `Exchange`s and keeps them in order: HTTP/1.1
pipelining is allowed, but only the request at the head of the line is answered; later ones wait
(with reading paused) until it is done. It also owns the connection's life: keep-alive, the idle
cut-off (checked by the gateway's once-a-second sweep), and the "lingering" close used after an
error answered before the request body was read, so the client sees the answer and not a reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol, cast

import httptools

from openeas.gateway import admission, errors
from openeas.gateway.admission import PEER_DENIED, PEER_IS_PROXY, PLAIN_ON_TLS, ListenerAccess
from openeas.gateway.exchange import Exchange, ExchangeHost
from openeas.gateway.flow import PAUSE_PIPELINE, PAUSE_UPGRADE
from openeas.gateway.snapshot import GatewaySettings
from openeas.gateway.tunnel import Tunnel, wants_websocket

log = logging.getLogger("openeas.gateway")

LINGER_IDLE_S = 2.0
LINGER_MAX_S = 10.0


MAX_HEAD_BYTES = 64 * 1024  # request line + headers


class GatewayHost(ExchangeHost, Protocol):
    """What a client connection uses of its gateway (`gateway.Gateway`)."""

    connections: set[ClientConnection]
    stopping: bool
    access: dict[str, ListenerAccess]  # by listener kind
    settings: GatewaySettings

    def log_exchange(self, ex: Exchange) -> None: ...


class _StopParsing(Exception):
    pass


class _HeadTooLarge(Exception):
    pass


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "closed",
        "closing",
        "current",
        "early",
        "gw",
        "head_size",
        "idle_since",
        "ignore_input",
        "in_feed",
        "keep_alive",
        "linger_deadline",
        "linger_until",
        "listener",
        "parser",
        "paused",
        "peer",
        "queue",
        "reading",
        "special",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, gw: GatewayHost, listener: str, plain_on_tls: bool = False) -> None:
        self.gw = gw
        self.listener = listener
        self.special = PLAIN_ON_TLS if plain_on_tls else 0  # admission's connection flags
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"-"
        self.reading: Exchange | None = None  # the request being parsed
        self.current: Exchange | None = None  # the request being answered
        self.queue: deque[Exchange] | None = None  # pipelined requests waiting their turn
        self.keep_alive = True
        self.head_size = 0
        self.paused = 0
        self.write_paused = False
        self.closing = False  # close once the current answer is written
        self.ignore_input = False
        self.in_feed = False  # inside parser.feed_data: upstream writes may be coalesced
        self.closed = False
        self.idle_since = 0.0
        self.linger_deadline = 0.0  # > 0 while lingering
        self.linger_until = 0.0
        self.tunnel: Tunnel | None = None  # after a WebSocket upgrade: raw bytes (tunnel.py)
        self.early = b""  # bytes after an upgrade request's head, sent once the tunnel is up

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        self.idle_since = self.gw.loop.time()
        self.gw.connections.add(self)
        if self.gw.stopping:
            self.closing = True
            transport.close()
            return
        if not self.gw.access[self.listener].open:
            self.check_access()

    def check_access(self) -> None:
        """Check the peer against the listener's allow-list (at accept, and when the list changes)."""
        self.special &= ~(PEER_DENIED | PEER_IS_PROXY)
        self.special |= admission.connection_flags(self.gw.access[self.listener], self.peer.decode("latin-1"))

    def _head_verdict(self, ex: Exchange) -> None:
        """Mark `ex` to be answered by the gateway when the connection's peer must not pass."""
        gw = self.gw
        sockname = None
        if self.special & PLAIN_ON_TLS and self.transport is not None:
            sockname = self.transport.get_extra_info("sockname")
        forced = admission.head_verdict(
            self.special,
            gw.access[self.listener],
            self.peer.decode("latin-1"),
            ex.xff,
            gw.settings.ssl_redirect,
            gw.settings.name,
            self.listener,
            admission.host_of(ex.headers),
            sockname,
            ex.url,
        )
        if forced is not None:
            ex.forced = forced

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.ignore_input:
            if self.linger_deadline:
                now = self.gw.loop.time()
                self.linger_deadline = min(now + LINGER_IDLE_S, self.linger_until)
            return
        self.in_feed = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.in_feed = False
            self._after_upgrade(data, int(exc.args[0]))
        except httptools.HttpParserError as exc:
            self.in_feed = False
            cause = exc.__context__
            if cause is not None and not isinstance(cause, _StopParsing | _HeadTooLarge):
                log.warning("error while handling a request: %r", cause)  # a bug: say so
            if not self.ignore_input:  # else: we stopped the parser ourselves
                too_large = isinstance(cause, _HeadTooLarge)
                self._parse_error(errors.msg_head_too_large(MAX_HEAD_BYTES) if too_large else None)
        self.in_feed = False
        ex = self.current
        if ex is not None and ex.corked:
            ex.flush_up()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gw.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        current = self.current
        if current is not None:
            self.current = None
            if not current.finished:
                current.abort()
                self.gw.log_exchange(current)
        for ex in self.queue or ():
            ex.abort()
        if self.reading is not None:
            self.reading.abort()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.up.pause_reading()
        ex = self.current
        if ex is not None and ex.up is not None:
            ex.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tunnel is not None:
            self.tunnel.up.resume_reading()
        ex = self.current
        if ex is not None and ex.up is not None:
            ex.up.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.ignore_input:
            raise _StopParsing  # the connection is closing: later pipelined requests are not read
        self.reading = Exchange(self, self.gw.loop.time())
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        ex = self.reading
        assert ex is not None
        ex.url = url if not ex.url else ex.url + url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.reading
        assert ex is not None
        if not ex.headers_done:  # trailers of a chunked body are not forwarded
            ex.headers.append((name, value))
            self.head_size += len(name) + len(value) + 4
            if self.head_size > MAX_HEAD_BYTES:
                raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        ex = self.reading
        assert ex is not None
        parser = self.parser
        self.keep_alive = keep_alive = parser.should_keep_alive()
        ex.on_head(parser.get_method(), parser.get_http_version() == "1.0", keep_alive)
        if wants_websocket(ex.method, parser.should_upgrade(), ex.headers):
            ex.websocket = True
            self.closing = True  # what follows the head is not HTTP: no further request here
        if self.special:
            self._head_verdict(ex)
        self._enqueue(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.reading
        assert ex is not None
        ex.request_body(body)

    def on_message_complete(self) -> None:
        ex = self.reading
        assert ex is not None
        self.reading = None
        ex.request_done()

    # -- the line of requests --------------------------------------------------------------
    def _enqueue(self, ex: Exchange) -> None:
        if self.current is None:
            self.current = ex
            ex.start()
            return
        if self.queue is None:
            self.queue = deque()
        self.queue.append(ex)
        self.pause(PAUSE_PIPELINE)

    def exchange_finished(self, ex: Exchange) -> None:
        """`ex` is answered and its request fully read (or the connection is closing)."""
        if ex is not self.current:
            return
        self.current = None
        self.gw.log_exchange(ex)
        if self.tunnel is not None:
            return  # the connection now belongs to the tunnel
        if self.closing:
            self._close(lingering=not ex.req_done or self.reading is not None)
            return
        queue = self.queue
        if queue:
            nxt = queue.popleft()
            if not queue:
                self.resume(PAUSE_PIPELINE)
            self.current = nxt
            self.gw.loop.call_soon(nxt.start)
            return
        self.idle_since = self.gw.loop.time()

    def _after_upgrade(self, data: bytes, offset: int) -> None:
        if self.parser.get_method() == b"CONNECT":
            self.ignore_input = True  # tunnel bytes follow; the request is answered 405 and closed
            return
        ex = self.current if self.queue is None or not self.queue else self.queue[-1]
        if ex is not None and ex.websocket and not ex.finished:
            # WebSocket frames may follow: hold them (and stop reading) until the 101 comes
            self.early = data[offset:]
            self.pause(PAUSE_UPGRADE)
            return
        # `Upgrade:` (h2c, websocket) is not supported: the request was handled as plain
        # HTTP/1.1 without that header; parsing goes on with the bytes after it.
        rest = data[offset:]
        if rest:
            self.data_received(rest)

    def _parse_error(self, message: str | None) -> None:
        self.ignore_input = True
        ex = self.reading
        self.reading = None
        if ex is not None and ex.headers_done and not ex.req_done:
            ex.request_broken()
            return
        if ex is None and not self.keep_alive:
            return  # bytes after a request that closes the connection: not read
        bad = Exchange(self, self.gw.loop.time())
        bad.headers_done = True
        bad.req_done = True
        bad.keep_alive = False
        bad.forced = admission.bad_request(message)
        self._enqueue(bad)

    def start_tunnel(self, tunnel: Tunnel) -> None:
        """The instance answered the WebSocket upgrade with 101: relay raw bytes from now on."""
        self.tunnel = tunnel
        early, self.early = self.early, b""
        tunnel.from_client(early)
        self.resume(PAUSE_UPGRADE)

    # -- I/O helpers used by Exchange ------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def writelines(self, data: tuple[bytes, ...]) -> None:
        if not self.closed:
            self.transport.writelines(data)  # type: ignore[union-attr]

    def pause(self, bit: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self.paused |= bit

    def resume(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close at once (a tunnel's other side closed)."""
        if not self.closed and self.transport is not None:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        """Tear the connection down at once (a response broke half-way)."""
        if not self.closed:
            self.closing = True
            self.transport.abort()  # type: ignore[union-attr]

    def _close(self, lingering: bool) -> None:
        transport = self.transport
        self.ignore_input = True
        if self.closed or transport is None:
            return
        if not lingering:
            transport.close()
            return
        # Answer first, then keep reading (and dropping) what the client still sends for a
        # while, so that closing with unread bytes does not reset the answer away.
        now = self.gw.loop.time()
        self.linger_until = now + LINGER_MAX_S
        self.linger_deadline = now + LINGER_IDLE_S
        if self.paused:
            self.paused = 0
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()

    # -- called by the gateway's sweep and shutdown ----------------------------------------
    def sweep(self, now: float, idle_timeout_s: float) -> None:
        if self.closed:
            return
        if self.tunnel is not None:
            if self.tunnel.idle_for(now) > idle_timeout_s:
                self.tunnel.close()
            return
        if self.linger_deadline:
            if now >= self.linger_deadline:
                self.transport.close()  # type: ignore[union-attr]
        elif self.current is None and now - self.idle_since > idle_timeout_s:
            self.transport.close()  # type: ignore[union-attr]

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else once the current answer is written."""
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.close()  # WebSocket clients reconnect (to another gateway)
        elif self.current is None and not self.closed:
            self.transport.close()  # type: ignore[union-attr]
