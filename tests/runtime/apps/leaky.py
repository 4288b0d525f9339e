"""An instance that leaks memory on request: GET /health, GET /pid, POST /leak (then it keeps
allocating 8 MiB every 50 ms, touching every page, and never frees it). Listens on $PORT."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HELD: list[bytes] = []


def leak() -> None:
    while True:
        HELD.append(b"\x01" * (8 * 1024 * 1024))  # written, so resident (not lazily zero-mapped)
        time.sleep(0.05)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"pid": os.getpid()} if self.path == "/pid" else {"ok": True})

    def do_POST(self) -> None:
        threading.Thread(target=leak, daemon=True).start()
        self._send({"leaking": True})


print("leaky app listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
