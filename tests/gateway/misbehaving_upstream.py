"""An instance that misbehaves on purpose, by request path, for the gateway's bounds tests.

- `/garbage`: answers a status line that is not HTTP;
- `/huge-head`: answers 200 with 100 KB of headers;
- `/cut`: announces a 100,000-byte body, sends 10 bytes and closes;
- `/silent`: accepts the request and never answers (the connection stays open);
- `/stream?n=N`: a chunked body of N bytes in 64 KiB pieces, written as fast as the socket takes
  them (blocking sends: the gateway's backpressure is what slows it down);
- anything else: 200 `ok` once the request's Content-Length body is read.
A real TCP server on a thread of the test process, one thread per connection.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import parse_qs, urlsplit

PIECE = b"s" * 65536


def _serve(conn: socket.socket, hold: list[socket.socket]) -> None:
    data = b""
    try:
        while True:  # plain requests keep the connection (the gateway pools it)
            while b"\r\n\r\n" not in data:
                got = conn.recv(65536)
                if not got:
                    return
                data += got
            if not _answer(conn, data, hold):
                return
            data = b""
    except OSError:
        pass
    finally:
        if not hold or hold[-1] is not conn:
            conn.close()


def _answer(conn: socket.socket, data: bytes, hold: list[socket.socket]) -> bool:
    """Answer one request; True when the connection stays open for the next."""
    target = data.split(b" ", 2)[1].decode()
    url = urlsplit(target)
    path = url.path.rsplit("/", 1)[-1]
    if path == "garbage":
        conn.sendall(b"HTTP/1.1 two hundred OK\r\n\r\n")
    elif path == "huge-head":
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"h" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n")
    elif path == "cut":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
    elif path == "silent":
        hold.append(conn)  # never answered, never closed by us
        return False
    elif path == "stream":
        n = int(parse_qs(url.query)["n"][0])
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        head = b"%x\r\n" % len(PIECE)
        while n > 0:
            conn.sendall(head + PIECE + b"\r\n")
            n -= len(PIECE)
        conn.sendall(b"0\r\n\r\n")
    else:  # read the whole (Content-Length) body first, as an instance does
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            got = conn.recv(65536)
            if not got:
                return False
            body += got
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True
    conn.shutdown(socket.SHUT_WR)
    return False


def start_misbehaving_upstream() -> tuple[int, socket.socket]:
    """Returns (port, listening socket); close the socket to stop accepting."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    hold: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn, hold), daemon=True).start()

    threading.Thread(target=accept, name="misbehaving-upstream", daemon=True).start()
    return int(sock.getsockname()[1]), sock
