"""A stand-in inference instance for the queue tests: an ordinary HTTP service, nothing queue-aware.

`python worker_app.py PORT DELAY_S LOG_PATH` (PORT 0: any free one; it prints `listening PORT`
once listening): every POST sleeps DELAY_S (the "inference"), appends
the request id it got to LOG_PATH (so a test counts deliveries, duplicates included), keeps the
most requests it ever had at once in LOG_PATH.max (the window check) and answers
`done:<body>`; a body starting with `fail` gets a 500 (for the dead-letter tests), one starting
with `bad` a 400 (a final answer that still goes to the sink).
"""

import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.0
    log_fd = -1
    max_path = ""
    lock = threading.Lock()
    active = 0
    most = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rid = self.headers.get("X-Eas-Queueservice-Request-Id", "")
        os.write(self.log_fd, f"{rid}\n".encode())
        cls = type(self)
        with cls.lock:
            cls.active += 1
            if cls.active > cls.most:
                cls.most = cls.active
                with open(cls.max_path, "w") as f:
                    f.write(str(cls.most))
        time.sleep(self.delay)
        with cls.lock:
            cls.active -= 1
        if body.startswith(b"fail"):
            status, out = 500, b"failed on purpose"
        elif body.startswith(b"bad"):
            status, out = 400, b"bad input"
        else:
            status, out = 200, b"done:" + body
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def main():
    port, delay, log_path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    Handler.delay = delay
    Handler.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    Handler.max_path = log_path + ".max"
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
