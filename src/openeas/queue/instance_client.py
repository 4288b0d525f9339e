"""The dispatcher's HTTP client: one POST to an instance, over pooled HTTP/1.1 keep-alive connections.

A general-purpose client (httpx) cost the queue server more CPU than everything else it does per
request; delivering a body and reading the answer needs little: asyncio streams, a request head
written by hand, httptools to parse the response (chunked or not). Errors come in two kinds the
dispatcher treats differently: `NotDelivered` (the connection was refused: the request never
reached the instance) and `DeliveryFailed` (it may have: a reset, a timeout, a broken answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httptools

READ_CHUNK = 65536
MAX_IDLE_PER_INSTANCE = 64


class NotDelivered(Exception):
    """The instance refused the connection: the request was not sent."""


class DeliveryFailed(Exception):
    """The request was sent (or may have been) but no complete answer came back."""


@dataclass
class _Answer:
    """httptools callbacks: collect the body, note when the message is complete."""

    body: list[bytes] = field(default_factory=list)
    done: bool = False

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class InstanceClient:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def post(
        self, host: str, port: int, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """(status, body) of the instance's answer."""
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        key = (host, port)
        pooled = self._idle.get(key)
        stale = False
        if pooled:
            conn = pooled.pop()
            try:
                return await self._exchange(key, conn, request)
            except _StaleConnection:
                # closed before any answer: an idle connection the instance dropped (send it
                # anew), or an instance that died with it (then the new connection is refused)
                stale = True
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout_s)
        except (ConnectionRefusedError, TimeoutError, OSError) as exc:
            if stale:  # it may have died working on it: that was a try
                raise DeliveryFailed(f"the connection was lost, then {type(exc).__name__}") from None
            raise NotDelivered(type(exc).__name__) from None
        try:
            return await self._exchange(key, _Conn(reader, writer), request)
        except _StaleConnection:
            raise DeliveryFailed("the connection closed before an answer") from None

    async def _exchange(self, key: tuple[str, int], conn: _Conn, request: bytes) -> tuple[int, bytes]:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        got_any = False
        try:
            async with asyncio.timeout(self.timeout_s):
                conn.writer.write(request)
                await conn.writer.drain()
                while not answer.done:
                    data = await conn.reader.read(READ_CHUNK)
                    if not data:
                        if got_any:
                            raise DeliveryFailed("the instance closed the connection mid-answer")
                        raise _StaleConnection
                    got_any = True
                    parser.feed_data(data)
        except (_StaleConnection, DeliveryFailed):
            conn.close()
            raise
        except TimeoutError:
            conn.close()
            raise DeliveryFailed(f"no complete answer within {self.timeout_s:g} s") from None
        except (OSError, httptools.HttpParserError) as exc:
            conn.close()
            if not got_any and isinstance(exc, ConnectionResetError):
                raise _StaleConnection from None
            raise DeliveryFailed(type(exc).__name__) from None
        status = parser.get_status_code()
        if parser.should_keep_alive() and len(self._idle.setdefault(key, [])) < MAX_IDLE_PER_INSTANCE:
            self._idle[key].append(conn)
        else:
            conn.close()
        return status, b"".join(answer.body)

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A pooled connection the instance had closed: nothing was read, so the request may be sent
    again on a new connection."""
