"""A test service that can be slow, crash, or echo: the failure cases of the e2e tests.

GET /health, POST|GET /echo (returns method, path, query, headers, body length as JSON),
GET /sleep?ms=N (answers after N ms), POST /crash (the process exits at once), GET /pid.
"""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, flush=True)

    def _send(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/health":
            self._send(200, {"status": "ok"})
        elif url.path == "/pid":
            self._send(200, {"pid": os.getpid()})
        elif url.path == "/sleep":
            ms = int(parse_qs(url.query).get("ms", ["0"])[0])
            time.sleep(ms / 1000)
            self._send(200, {"slept_ms": ms})
        elif url.path == "/crash":
            os._exit(3)
        elif url.path == "/echo":
            self._send(
                200,
                {
                    "method": self.command,
                    "path": url.path,
                    "query": url.query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body_len": len(body),
                },
            )
        else:
            self._send(404, {"error": f"no route {url.path}"})

    do_GET = _handle
    do_POST = _handle


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()
