"""A test service that says which service and instance answered: any path, GET or POST.

Answers `{"service": $OPENEAS_SERVICE, "instance": $OPENEAS_INSTANCE_ID, "path": <path>}` (the
local runtime sets both variables), and /health for the probe. Used by the group and VPC
direct-connection tests.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        payload = {
            "service": os.environ.get("OPENEAS_SERVICE", ""),
            "instance": os.environ.get("OPENEAS_INSTANCE_ID", ""),
            "path": self.path,
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _handle
    do_POST = _handle


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
