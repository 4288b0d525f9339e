"""Accept and parse: one asyncio Protocol per client connection, parsed with httptools.

The first two steps of the request path (accept -> parse -> admit -> pick -> proxy -> finish, see
exchange.py). The connection checks its peer once at accept (`admission.connection_flags`),
turns bytes into `Exchange`s and keeps them in order: HTTP/1.1
pipelining is allowed, but only the request at the head of the line is answered; later ones wait
(with reading paused) until it is done. It also owns the connection's life: keep-alive, the idle
cut-off (checked by the gateway's once-a-second sweep), and the "lingering" close used after an
error answered before the request body was read, so the client sees the answer and not a reset.

Strictness and bounds: every head is checked against the framing rules (framing.py; what llhttp
does not already refuse) before anything of it goes on, and the connection enforces its
gateway's `ClientBounds` (bounds.py): connection counts at accept, head size and header count in
the callbacks, head time, body rate and idle time in the once-a-second sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol, cast

import httptools

from openeas.gateway import admission, bounds, errors, framing
from openeas.gateway.admission import PEER_DENIED, PEER_IS_PROXY, PLAIN_ON_TLS, ListenerAccess, Reject
from openeas.gateway.bounds import ClientBounds
from openeas.gateway.exchange import Exchange, ExchangeHost
from openeas.gateway.flow import PAUSE_PIPELINE, PAUSE_UPGRADE
from openeas.gateway.snapshot import GatewaySettings
from openeas.gateway.tunnel import Tunnel, wants_websocket

log = logging.getLogger("openeas.gateway")

LINGER_IDLE_S = 2.0
LINGER_MAX_S = 10.0


class GatewayHost(ExchangeHost, Protocol):
    """What a client connection uses of its gateway (`gateway.Gateway`)."""

    connections: set[ClientConnection]
    stopping: bool
    access: dict[str, ListenerAccess]  # by listener kind
    settings: GatewaySettings
    open_by_listener: dict[str, int]  # open client connections per listener kind
    open_by_client: dict[bytes, int]  # ... per client address

    def log_exchange(self, ex: Exchange) -> None: ...

    def connection_event(self, why: str) -> None: ...


class _StopParsing(Exception):
    pass


class _Refuse(Exception):
    """Raised inside a parser callback: stop parsing and answer `verdict`, then close."""

    def __init__(self, verdict: Reject) -> None:
        self.verdict = verdict


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "bounds",
        "closed",
        "closing",
        "counted",
        "current",
        "early",
        "gw",
        "head_count",
        "head_since",
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
        "rate_bytes",
        "rate_since",
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
        self.head_count = 0
        self.bounds: ClientBounds = gw.settings.bounds
        self.head_since = 0.0  # the head deadline counts from here (accept, or a later head's first byte)
        self.rate_since = 0.0  # body rate: the window's start (0: not measuring)
        self.rate_bytes = 0
        self.counted = False  # counted in gw.open_by_listener / open_by_client
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
        gw = self.gw
        self.idle_since = self.head_since = gw.loop.time()
        gw.connections.add(self)
        if gw.stopping:
            self.closing = True
            transport.close()
            return
        on_listener = gw.open_by_listener.get(self.listener, 0)
        from_client = gw.open_by_client.get(self.peer, 0)
        refused = bounds.connection_verdict(self.bounds, on_listener, from_client)
        if refused is not None:
            # refused before reading anything: a reset costs the gateway nothing more
            gw.connection_event(refused)
            self.closing = self.ignore_input = True
            transport.abort()
            return
        self.counted = True
        gw.open_by_listener[self.listener] = on_listener + 1
        gw.open_by_client[self.peer] = from_client + 1
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
        upgrade_at = -1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            upgrade_at = int(exc.args[0])  # handled below, outside this except: the bytes after
            # it are parsed by a nested data_received, whose own errors must not look caused by it
        except httptools.HttpParserError as exc:
            self.in_feed = False
            cause = exc.__context__
            if isinstance(cause, _Refuse):
                self._parse_error(cause.verdict)
            else:
                if cause is not None and not isinstance(cause, _StopParsing):
                    # a bug of ours in a callback, not bad bytes: 500, and say so in the log
                    log.error("error while handling a request", exc_info=cause)
                    if not self.ignore_input:
                        self._parse_error(admission.internal_error())
                elif not self.ignore_input:  # else: we stopped the parser ourselves
                    rule = framing.parser_error_rule(str(exc))
                    self._parse_error(admission.framing(rule) if rule is not None else None)
        self.in_feed = False
        if upgrade_at >= 0:
            self._after_upgrade(data, upgrade_at)
        ex = self.current
        if ex is not None and ex.corked:
            ex.flush_up()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        gw = self.gw
        gw.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.counted:
            self.counted = False
            left = gw.open_by_listener[self.listener] - 1
            gw.open_by_listener[self.listener] = left
            left = gw.open_by_client[self.peer] - 1
            if left:
                gw.open_by_client[self.peer] = left
            else:
                del gw.open_by_client[self.peer]
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
        now = self.gw.loop.time()
        self.reading = Exchange(self, now)
        self.head_since = now  # the head must be complete within head_timeout_s of its first byte
        self.head_size = 0
        self.head_count = 0

    def on_url(self, url: bytes) -> None:
        ex = self.reading
        assert ex is not None
        ex.url = url if not ex.url else ex.url + url
        self.head_size += len(url)
        limit = self.bounds.max_head_bytes
        if self.head_size > limit:
            raise _Refuse(admission.refused(414, errors.msg_target_too_long(limit)))

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.reading
        assert ex is not None
        if not ex.headers_done:
            ex.headers.append((name, value))
        # trailers of a chunked body are not forwarded, but they count like headers
        self.head_size += len(name) + len(value) + 4
        self.head_count += 1
        b = self.bounds
        if self.head_size > b.max_head_bytes:
            raise _Refuse(admission.refused(431, errors.msg_head_too_large(b.max_head_bytes)))
        if self.head_count > b.max_header_count:
            raise _Refuse(admission.refused(431, errors.msg_too_many_headers(b.max_header_count)))

    def on_headers_complete(self) -> None:
        ex = self.reading
        assert ex is not None
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        checked = framing.check_head(method, version, ex.url, ex.headers, self.gw.max_body_bytes)
        if checked is not None:
            if isinstance(checked, framing.FramingRule):
                raise _Refuse(admission.framing(checked))
            ex.url = checked.url  # absolute-form: forwarded in origin-form with its authority as Host
            if checked.host is not None:
                ex.headers = framing.apply_host(ex.headers, checked.host)
        self.keep_alive = keep_alive = parser.should_keep_alive()
        self.head_size = self.head_count = 0  # from here on: trailers
        self.head_since = 0.0
        ex.on_head(method, version == "1.0", keep_alive)
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
        self.rate_since = 0.0
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
        if self.reading is None:
            self.head_since = 0.0  # an idle keep-alive connection: the idle timeout applies

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

    def _parse_error(self, verdict: Reject | None) -> None:
        """Stop reading; answer `verdict` (400 when None) for the request being read, then close."""
        self.ignore_input = True
        ex = self.reading
        self.reading = None
        if ex is not None and ex.headers_done and not ex.req_done:
            ex.request_broken(verdict)
            return
        if ex is None and not self.keep_alive:
            return  # bytes after a request that closes the connection: not read
        bad = Exchange(self, self.gw.loop.time())
        bad.headers_done = True
        # not req_done: the close lingers, so a client still sending reads the answer, not a reset
        bad.keep_alive = False
        bad.forced = verdict or admission.bad_request()
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
    def sweep(self, now: float, idle_timeout_s: float | None = None) -> None:
        """The time bounds, once a second: linger, head time (408), body rate (408), idle."""
        if self.closed:
            return
        b = self.bounds
        idle = b.idle_timeout_s if idle_timeout_s is None else idle_timeout_s
        if self.tunnel is not None:
            if self.tunnel.idle_for(now) > idle:
                self.tunnel.close()
            return
        if self.linger_deadline:
            if now >= self.linger_deadline:
                self.transport.close()  # type: ignore[union-attr]
            return
        if self.ignore_input:
            return
        reading = self.reading
        if self.head_since and now - self.head_since > b.head_timeout_s and not self.paused:
            if reading is None and self.current is None and not self.queue:
                self.gw.connection_event(bounds.HEAD_TIMEOUT)  # a new connection that sent nothing
                self.transport.close()  # type: ignore[union-attr]
                return
            if reading is not None and not reading.headers_done:
                self.gw.connection_event(bounds.HEAD_TIMEOUT)
                self._parse_error(admission.refused(408, errors.msg_head_timeout(b.head_timeout_s)))
                return
        if reading is not None and reading.headers_done and b.min_body_rate:
            if self.paused or not self.rate_since:
                self.rate_since, self.rate_bytes = now, reading.body_in  # our pause is not the client's
            elif bounds.body_too_slow(b, reading.body_in - self.rate_bytes, now - self.rate_since):
                self.gw.connection_event(bounds.BODY_TOO_SLOW)
                message = errors.msg_body_too_slow(b.min_body_rate, b.body_rate_window_s)
                self._parse_error(admission.refused(408, message))
                return
            elif now - self.rate_since >= b.body_rate_window_s:
                self.rate_since, self.rate_bytes = now, reading.body_in
        if self.current is None and reading is None and now - self.idle_since > idle:
            self.gw.connection_event(bounds.IDLE_CLOSED)
            self.transport.close()  # type: ignore[union-attr]

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else once the current answer is written."""
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.close()  # WebSocket clients reconnect (to another gateway)
        elif self.current is None and not self.closed:
            self.transport.close()  # type: ignore[union-attr]
