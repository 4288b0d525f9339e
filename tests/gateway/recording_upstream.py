"""An instance that records every request it receives, raw and parsed, and answers 200 `ok`.

The framing and bounds tests need to know exactly what reached an instance (nothing, for a request
the gateway refused; the normalized form, for one it accepted). This server runs on a thread of the
test process, parses with httptools (the same parser family as uvicorn's) and keeps, per request,
the target, the headers, the body and the raw bytes of its connection. It is a real TCP server:
the gateway and nginx connect to it as to any instance.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import httptools


@dataclass
class Received:
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass
class RecordingUpstream:
    sock: socket.socket
    requests: list[Received] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every byte received, per connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def paths(self) -> list[bytes]:
        with self.lock:
            return [r.url for r in self.requests]

    def close(self) -> None:
        self.sock.close()


class _Conn:
    def __init__(self, up: RecordingUpstream, conn: socket.socket) -> None:
        self.up = up
        self.conn = conn
        self.current: Received | None = None
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.current = Received(b"", [])

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        with self.up.lock:
            self.up.requests.append(self.current)
        self.conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")

    def serve(self) -> None:
        index = len(self.up.raw)
        with self.up.lock:
            self.up.raw.append(b"")
        try:
            while True:
                data = self.conn.recv(65536)
                if not data:
                    return
                with self.up.lock:
                    self.up.raw[index] += data
                self.parser.feed_data(data)
        except (OSError, httptools.HttpParserError):
            return
        finally:
            self.conn.close()


def start_recording_upstream() -> RecordingUpstream:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    up = RecordingUpstream(sock)

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=_Conn(up, conn).serve, daemon=True).start()

    threading.Thread(target=accept, name="recording-upstream", daemon=True).start()
    return up
