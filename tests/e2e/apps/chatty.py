"""A test service that logs a long line per request through Python's `logging` (as uvicorn and
the built-in processors do) on stdout: GET /health, GET anything else -> 200 {"ok": true}.

Used by the full-log-disk test: logging drops a line it cannot write (a full disk) and the
service goes on serving. Listens on $PORT."""

from __future__ import annotations

import json
import logging
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("chatty")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", format % args, "x" * 1000)

    def do_GET(self) -> None:
        data = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


logging.basicConfig(stream=sys.stdout, level=logging.INFO)
log.info("chatty listening on %s", os.environ["PORT"])
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
