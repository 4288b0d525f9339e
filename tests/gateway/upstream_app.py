"""A tiny real HTTP/1.1 instance for the gateway tests (stdlib only, one thread per connection).

    python tests/gateway/upstream_app.py --name NAME [--port P]

prints `upstream NAME listening PORT` once listening. Routes (any method):

  /health                 200 {"status": "ok"}
  /echo[...]              200 JSON: method, path, query, headers (lower-case names), body_len,
                          body_sha256, name (the instance name)
  /raw                    the request body sent back as is (application/octet-stream)
  /bytes?n=N              N bytes of a fixed pattern, with Content-Length
  /chunked?n=N            N bytes of the pattern, chunked in 10 000-byte pieces
  /until-close?n=N        N bytes, no Content-Length, the connection closed to end the body
  /sleep?ms=N             answers after N ms
  /sse?n=N&ms=M           text/event-stream, N events M ms apart, each with its send time
  /close-mid              promises 100 000 bytes, sends 1 000, closes
  /close-now              closes the connection without answering
  /slow-read?ms=N         sleeps N ms before reading the request body, then echoes its length
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PATTERN = bytes(range(256)) * 4096  # 1 MiB


def pattern(n: int) -> bytes:
    reps = n // len(PATTERN) + 1
    return (PATTERN * reps)[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "upstream-app"
    instance_name = "upstream"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode())

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)

        def arg(name: str, default: int) -> int:
            return int(query.get(name, [str(default)])[0])

        path = url.path
        if path == "/slow-read":
            time.sleep(arg("ms", 0) / 1000)
        body = self._read_body()
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path.startswith("/echo") or path == "/":
            self._json(
                200,
                {
                    "method": self.command,
                    "path": path,
                    "query": url.query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body_len": len(body),
                    "body_sha256": hashlib.sha256(body).hexdigest(),
                    "name": self.instance_name,
                },
            )
        elif path == "/raw":
            self._send(200, body, "application/octet-stream")
        elif path == "/bytes":
            self._send(200, pattern(arg("n", 1000)), "application/octet-stream")
        elif path == "/chunked":
            data = pattern(arg("n", 1000))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 10000):
                piece = data[i : i + 10000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/until-close":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(pattern(arg("n", 1000)))
            self.close_connection = True
        elif path == "/sleep":
            time.sleep(arg("ms", 0) / 1000)
            self._json(200, {"slept_ms": arg("ms", 0), "name": self.instance_name})
        elif path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(arg("n", 5)):
                if i:
                    time.sleep(arg("ms", 100) / 1000)
                event = b"data: %s\n\n" % json.dumps({"i": i, "sent": time.time()}).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/close-mid":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"z" * 1000)
            self.wfile.flush()
            self._hard_close()
        elif path == "/close-now":
            self._hard_close()
        elif path == "/slow-read":
            self._json(200, {"body_len": len(body)})
        else:
            self._json(404, {"error": f"no route {path}"})

    def _hard_close(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    class Named(Handler):
        instance_name = args.name

    ThreadingHTTPServer.request_queue_size = 1024  # the default backlog of 5 drops connections
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Named)
    server.daemon_threads = True
    print(f"upstream {args.name} listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
