"""A lean SSE upstream for the bench: every open stream gets one event per second.

Run as `python3 bench/sse_upstream.py --port $PORT` (an openeas service instance). One asyncio
Protocol per connection and one ticker for all streams (not a task per stream), so one process
holds 10,000 streams. `GET /health` answers 200; any other GET starts a stream whose first
event is sent at once, then one per second. Bodies are chunked (HTTP/1.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import cast

MAX_HEAD = 16 * 1024
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def event_chunk(seq: int) -> bytes:
    data = f"id: {seq}\ndata: {json.dumps({'seq': seq, 'ts': round(time.time(), 3)})}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


class Hub:
    """The open streams of this process."""

    def __init__(self) -> None:
        self.streams: set[StreamProtocol] = set()


class StreamProtocol(asyncio.Protocol):
    __slots__ = ("buf", "hub", "streaming", "transport")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = b""
        self.streaming = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.streaming or self.transport is None:
            return  # nothing more is expected from a streaming client
        self.buf += data
        while self.transport is not None and not self.streaming:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            target = parts[1] if len(parts) > 1 else b"/"
            if target.startswith(b"/health"):
                self.transport.write(HEALTH)
                continue
            self.streaming = True
            self.transport.write(STREAM_HEAD + event_chunk(0))
            self.hub.streams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.streams.discard(self)
        self.transport = None


async def tick(hub: Hub, period: float) -> None:
    seq = 0
    while True:
        await asyncio.sleep(period - (time.monotonic() % period))
        seq += 1
        chunk = event_chunk(seq)
        for stream in list(hub.streams):
            if stream.transport is not None:
                stream.transport.write(chunk)


async def serve(host: str, port: int, period: float) -> None:
    hub = Hub()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StreamProtocol(hub), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = asyncio.create_task(tick(hub, period))
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        server.close()
        for stream in list(hub.streams):
            if stream.transport is not None:
                stream.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between events")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.period))
    else:
        uvloop.run(serve(args.host, args.port, args.period))


if __name__ == "__main__":
    main()
