"""A test instance with a process tree: an HTTP server on $HOST:$PORT plus two helpers.

GET / answers {"host": $HOST, "pid": ..., "children": [...]}. At start it runs `sleep` in its own
process group (a plain child) and, with TREE_ESCAPE=1, a `sleep` that leaves the group with
setsid() (what a daemonizing library does): both must be gone when the instance is.
It prints "tree up" to stdout, so the log tail can be checked, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

children = [subprocess.Popen(["sleep", "1000"]).pid]
if os.environ.get("TREE_ESCAPE") == "1":
    children.append(subprocess.Popen(["sleep", "1001"], start_new_session=True).pid)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"host": os.environ["HOST"], "pid": os.getpid(), "children": children}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"tree up on {os.environ['HOST']}:{os.environ['PORT']} children {children}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
