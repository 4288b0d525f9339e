"""Access log: one JSON line per request, written only when a path was given.

Fields: time, method, service, path (the forwarded sub-path, without query), status, bytes
(response body bytes sent), upstream (host:port or "-"), duration_ms, request_id, peer, listener;
and member (the service that answered) for a request on a group path (`<G>` or `<G>.<service>`).
Never the token nor any header. Lines are buffered and flushed by the gateway's
once-a-second sweep (and on stop, and when 64 KiB are waiting), so logging costs one formatted
line per request.

A log that cannot be written (a full disk, an I/O error) never stops serving: the lines of a
failed write are dropped and counted (`dropped`, `openeas_gateway_access_log_dropped_lines_total`),
one warning is logged when writes start failing and one when they work again, and memory stays
bounded (nothing is kept for a retry).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import IO, Protocol

from openeas.gateway.routing import path_of


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Peer(Protocol):
    @property
    def peer(self) -> bytes: ...


class LoggedRequest(Protocol):
    """What a line says of a finished request (`exchange.Exchange`)."""

    @property
    def service(self) -> bytes: ...  # the name in the path (a service, `<G>` or `<G>.<service>`)

    @property
    def entry(self) -> _Named | None: ...  # the service that answered, when routed

    @property
    def client(self) -> _Peer: ...

    method: bytes
    url: bytes
    target: bytes  # the forwarded sub-path and query (b"" when not routed)
    status: int
    bytes_out: int
    up_addr: str
    t_start: float  # perf_counter() when its head started
    request_id: bytes


# the fields of a line, in order (the closing brace follows, after "member" when there is one)
_LINE = (
    '{"time":%r,"method":%s,"service":%s,"path":%s,"status":%d,"bytes":%d,"upstream":%s,'
    '"duration_ms":%r,"request_id":%s,"peer":%s,"listener":%s'
)
_str = encode_basestring_ascii  # a JSON string, as json.dumps writes it
FLUSH_BYTES = 64 * 1024  # written at once when this much waits (between the 1 s sweeps)
log = logging.getLogger("openeas.gateway")


class AccessLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._owned = path not in ("-", "stderr")
        # our own buffer over a raw descriptor: a failed write drops its lines instead of leaving
        # them in a file object's buffer to fail again (and raise) on every later write
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if self._owned else -1
        self._stream: IO[str] = sys.stderr
        self._lines: list[str] = []
        self._waiting = 0  # characters in _lines
        self.dropped = 0  # lines lost to failed writes
        self._failing = False
        self._cut = False  # a failed write left part of a line: start the next one on a new line

    def write(self, ex: LoggedRequest, now: float, listener: str) -> None:
        """`now`: time.perf_counter() when `ex` finished (sub-millisecond, unlike the loop clock).

        The line is what `json.dumps(record, separators=(",", ":"))` writes for the fields in
        this order, formatted directly (strings escaped by json's own encoder): a third of the
        cost of building a dict and dumping it, once per request."""
        service = ex.service.decode("latin-1")
        target = ex.target or ex.url
        line = _LINE % (
            round(time.time(), 3),
            _str(ex.method.decode("latin-1")),
            _str(service),
            _str(path_of(target).decode("latin-1")),
            ex.status,
            ex.bytes_out,
            _str(ex.up_addr or "-"),
            round((now - ex.t_start) * 1000.0, 3),
            _str(ex.request_id.decode("latin-1")),
            _str(ex.client.peer.decode("latin-1")),
            _str(listener),
        )
        entry = ex.entry
        if entry is not None and entry.name != service:  # came by a group path
            line += f',"member":{_str(entry.name)}}}\n'
        else:
            line += "}\n"
        self._lines.append(line)
        self._waiting += len(line)
        if self._waiting >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what waits; never raises (see the module's doc)."""
        if not self._lines:
            return
        lines, self._lines, self._waiting = self._lines, [], 0
        text = "".join(lines)
        if self._cut:
            text = "\n" + text
        try:
            if self._owned:
                data = memoryview(text.encode("utf-8"))
                while data:
                    written = os.write(self._fd, data)
                    self._cut = True
                    data = data[written:]
                self._cut = False
            else:
                self._stream.write(text)
                self._stream.flush()
        except OSError as exc:
            self.dropped += len(lines)
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot write the access log %s (%s): dropping its lines until it can; serving goes on",
                    self.path,
                    exc.strerror or type(exc).__name__,
                )
            return
        if self._failing:
            self._failing = False
            log.warning(
                "the access log %s is written again (%d lines dropped so far)", self.path, self.dropped
            )

    def close(self) -> None:
        self.flush()
        if self._owned:
            os.close(self._fd)
