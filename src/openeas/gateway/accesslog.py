"""Access log: one JSON line per request, written only when a path was given.

Fields: time, method, service, path (the forwarded sub-path, without query), status, bytes
(response body bytes sent), upstream (host:port or "-"), duration_ms, request_id, peer, listener;
and member (the service that answered) for a request on a group path (`<G>` or `<G>.<service>`).
Never the token nor any header. Lines are buffered and flushed by the gateway's
once-a-second sweep (and on stop), so logging costs one dict and one json.dumps per request.
"""

from __future__ import annotations

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


class AccessLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[str]
        self._owned = path not in ("-", "stderr")
        if self._owned:
            self._file = open(path, "a", buffering=64 * 1024, encoding="utf-8")  # noqa: SIM115
        else:
            self._file = sys.stderr

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
        self._file.write(line)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._file.close()
