"""Send raw bytes to a listener and read back whole HTTP responses (status, headers, body, closed).

For the framing and bounds tests: requests no client library would write, answers read with
httptools so that a body or a pipelined second answer is framed exactly.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Exchange:
    answers: list[Answer]
    closed: bool  # the server closed the connection after the answers
    raw: bytes  # everything received


class _Reader:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.complete = 0
        self.pending: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.pending = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.pending.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.answers.append(Answer(self.parser.get_status_code(), dict(self.pending)))

    def on_body(self, body: bytes) -> None:
        self.answers[-1].body += body

    def on_message_complete(self) -> None:
        self.complete += 1


def exchange(
    port: int, raw: bytes, answers: int = 1, timeout: float = 5.0, host: str = "127.0.0.1"
) -> Exchange:
    """Write `raw`, read until `answers` responses are complete, then until the server closes or
    stays quiet for 0.3 s (a kept connection)."""
    reader = _Reader()
    received = b""
    closed = False
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may close before reading all: read its answer
            sock.sendall(raw)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(0.3, left) if reader.complete >= answers else left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if reader.complete >= answers:
                    break
                continue
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            received += data
            with contextlib.suppress(httptools.HttpParserError):  # not HTTP: `raw` shows it
                reader.parser.feed_data(data)
    return Exchange(reader.answers, closed, received)
