"""HTTPS listeners: the TLS context, and an accept loop that tells TLS from plain HTTP.

A TLS listener accepts connections itself and peeks at the first byte of each: a TLS handshake
starts with 0x16 (a handshake record); anything else is plain HTTP. TLS connections are handed to
the event loop with the context (`connect_accepted_socket`, one task per handshake), plain ones
without it, marked so that every request on them is answered by a redirect to https (308, when
the gateway has `ssl_redirect`) or a 400 that says to use https. So one port serves both, the way
EAS's "EnableSSLRedirection" behaves, without a second listener.

Custom domains (`tls.domains`) are served with the same certificate: it must name them (SAN).
Routing does not depend on the host name, so a custom domain reaches the same services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from openeas.gateway.snapshot import TlsSettings

log = logging.getLogger("openeas.gateway")

HANDSHAKE_TIMEOUT_S = 10.0
TLS_RECORD_HANDSHAKE = 0x16
ACCEPTS_PER_WAKEUP = 64


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """TLS 1.2+ server context with the gateway's certificate chain and key (raises on bad files)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert, tls.key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


ProtocolFactory = Callable[[bool], asyncio.Protocol]  # plain_on_tls -> protocol


class TlsListener:
    """Accepts on a bound socket; TLS connections get `ctx`, plain ones `factory(True)`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        factory: ProtocolFactory,
        backlog: int,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.ctx = ctx
        self.factory = factory
        self.backlog = backlog
        self.sniffing: dict[socket.socket, float] = {}  # accepted, first byte not seen yet
        self.tasks: set[asyncio.Task[None]] = set()  # handshakes in progress
        self.closed = False

    def start(self) -> None:
        self.sock.setblocking(False)
        self.sock.listen(self.backlog)
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again at the next wakeup
                log.warning("cannot accept a connection: %s", exc)
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sniffing[conn] = self.loop.time()
            self.loop.add_reader(conn.fileno(), self._sniff, conn)

    def _sniff(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        self.loop.remove_reader(conn.fileno())
        del self.sniffing[conn]
        if not first:
            conn.close()
            return
        tls = first[0] == TLS_RECORD_HANDSHAKE
        task = self.loop.create_task(self._hand_over(conn, tls))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _hand_over(self, conn: socket.socket, tls: bool) -> None:
        try:
            if tls:
                await self.loop.connect_accepted_socket(
                    lambda: self.factory(False),
                    conn,
                    ssl=self.ctx,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                )
            else:
                await self.loop.connect_accepted_socket(lambda: self.factory(True), conn)
        except asyncio.CancelledError:  # the gateway is stopping
            conn.close()
            raise
        except Exception as exc:  # a failed handshake concerns that client only
            log.debug("TLS handshake failed: %r", exc)
            conn.close()

    def sweep(self, now: float, max_wait_s: float) -> None:
        """Close accepted connections that sent nothing for `max_wait_s`."""
        for conn, since in list(self.sniffing.items()):
            if now - since > max_wait_s:
                self.loop.remove_reader(conn.fileno())
                del self.sniffing[conn]
                conn.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for conn in self.sniffing:
            self.loop.remove_reader(conn.fileno())
            conn.close()
        self.sniffing.clear()
        for task in self.tasks:
            task.cancel()
