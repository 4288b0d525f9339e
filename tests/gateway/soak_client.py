"""Load for the soak test, as its own process: `python soak_client.py PORT COUNT TOKEN`.

Sends COUNT requests in a fixed mix, one keep-alive connection reused while the gateway keeps it:
valid (200), wrong token (401), unknown service (404), body over the limit (413, connection closed)
and malformed bytes (400, connection closed). Prints one JSON line: the count by status and the
valid requests that did not get 200.
"""

from __future__ import annotations

import json
import socket
import sys
from collections import Counter

import httptools


class _Reader:
    def __init__(self) -> None:
        self.done = False
        self.status = 0
        self.keep = True
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.done = True


def main() -> None:
    port, count, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
    head = b"Host: soak\r\n"
    mix = [
        ("valid", b"GET /api/predict/svc/ok HTTP/1.1\r\n" + head + b"Authorization: " + token + b"\r\n\r\n"),
        ("401", b"GET /api/predict/svc/ok HTTP/1.1\r\n" + head + b"Authorization: wrong\r\n\r\n"),
        ("404", b"GET /api/predict/nosuch/ok HTTP/1.1\r\n" + head + b"Authorization: " + token + b"\r\n\r\n"),
        (
            "valid",
            b"POST /api/predict/svc/ok HTTP/1.1\r\n"
            + head
            + b"Authorization: "
            + token
            + b"\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "413",
            b"POST /api/predict/svc/ok HTTP/1.1\r\n"
            + head
            + b"Authorization: "
            + token
            + b"\r\nContent-Length: 2000000\r\n\r\n",
        ),
        ("malformed", b"GET /api/predict/svc/ok HTTP/1.1\r\n" + head + b"X-Bad : v\r\n\r\n"),
    ]
    statuses: Counter[str] = Counter()
    valid_errors = 0
    sock: socket.socket | None = None
    for i in range(count):
        kind, raw = mix[i % len(mix)]
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(raw)
        reader = _Reader()
        while not reader.done:
            data = sock.recv(65536)
            if not data:
                break
            reader.parser.feed_data(data)
        statuses[str(reader.status)] += 1
        if kind == "valid" and reader.status != 200:
            valid_errors += 1
        if not reader.done or not reader.keep:
            sock.close()
            sock = None
    print(json.dumps({"statuses": statuses, "valid_errors": valid_errors}), flush=True)


if __name__ == "__main__":
    main()
