"""An instance that records every request it gets, for the mirroring tests (stdlib only).

    python tests/gateway/counting_app.py --name NAME [--sleep S]

prints `upstream NAME listening PORT`. Every request but `GET /health` and `GET /count` is
recorded at arrival ("started") and, after sleeping S seconds, answered 200 and counted
"finished". `GET /count` -> {"started": n, "finished": n, "peak": the most in flight at once,
"requests": [{method, path, body, headers (lower-case names)}]}.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorder:
    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.finished = 0
        self.peak = 0  # the most requests in flight at once


def handler_for(rec: Recorder, name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _any(self) -> None:
            if self.path in ("/health", "/count"):
                with rec.lock:
                    doc = {
                        "started": len(rec.requests),
                        "finished": rec.finished,
                        "peak": rec.peak,
                        "requests": rec.requests,
                    }
                    body = json.dumps(doc).encode()
                self._answer(body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            with rec.lock:
                rec.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "body": data.decode("latin-1"),
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                rec.peak = max(rec.peak, len(rec.requests) - rec.finished)
            time.sleep(rec.sleep_s)
            with rec.lock:
                rec.finished += 1
            self._answer(json.dumps({"name": name}).encode())

        do_GET = do_POST = do_PUT = do_DELETE = _any

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="counter")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(Recorder(args.sleep), args.name))
    server.daemon_threads = True
    print(f"upstream {args.name} listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
