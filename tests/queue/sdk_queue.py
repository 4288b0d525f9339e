"""Runs in the eas-prediction venv: drives an Async service with the official QueueClient, unmodified.

argv: endpoint (host:port) service token mode [n] [window]
  mode "roundtrip": put n bodies `req-<i>` into the input queue, watch the sink (auto-commit) and
    collect n results; stdout JSON {"sent": {request_id: body}, "results": [{"requestId", "lastCode",
    "data", "index"}], "put_s", "total_s"}
  mode "poll": put n bodies, then read each result with get(request_id=..., timeout="5s") (plain
    HTTP long polling: what works through any HTTP proxy); same stdout as "roundtrip"
  mode "api": exercise the rest of the API on the sink (put with tags, get by index and by request id,
    attributes, search, delete, commit, truncate, index-only watch); stdout JSON of what came back
"""

import json
import sys
import threading
import time

from eas_prediction import QueueClient
from eas_prediction.exception import PredictException


def client(endpoint, name, token):
    c = QueueClient(endpoint, name)
    c.set_token(token)
    c.init()
    c.set_timeout(30000)
    return c


def roundtrip(endpoint, service, token, n, window):
    inq = client(endpoint, service, token)
    sink = client(endpoint, service + "/sink", token)
    sent = {}
    results = []
    done = threading.Event()

    def watch():
        watcher = sink.watch(0, window, auto_commit=True)
        for df in watcher.run():
            results.append(
                {
                    "requestId": df.tags["requestId"],
                    "lastCode": df.tags.get("lastCode"),
                    "data": df.data.decode(),
                    "index": df.index,
                }
            )
            if len(results) >= n:
                break
        watcher.close()
        done.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.monotonic()
    for i in range(n):
        index, rid = inq.put(f"req-{i}".encode(), tags={"batch": "b1"})
        assert int(index) > 0
        sent[rid] = f"req-{i}"
    put_s = time.monotonic() - t0
    done.wait(120)
    print(json.dumps({"sent": sent, "results": results, "put_s": put_s, "total_s": time.monotonic() - t0}))


def poll(endpoint, service, token, n):
    inq = client(endpoint, service, token)
    sink = client(endpoint, service + "/sink", token)
    t0 = time.monotonic()
    sent = {}
    for i in range(n):
        _, rid = inq.put(f"req-{i}".encode())
        sent[rid] = f"req-{i}"
    put_s = time.monotonic() - t0
    results = []
    deadline = time.monotonic() + 120
    for rid in sent:
        got = []
        while not got and time.monotonic() < deadline:
            got = sink.get(request_id=rid, timeout="5s")
        for df in got:
            results.append(
                {
                    "requestId": df.tags["requestId"],
                    "lastCode": df.tags.get("lastCode"),
                    "data": df.data.decode(),
                    "index": df.index,
                }
            )
    print(json.dumps({"sent": sent, "results": results, "put_s": put_s, "total_s": time.monotonic() - t0}))


def api(endpoint, service, token):
    sink = client(endpoint, service + "/sink", token)
    out = {}
    index, rid = sink.put(b"abc", tags={"color": "red"})
    out["put"] = [index, rid]
    got = sink.get(request_id=rid, auto_delete=False)
    out["by_request_id"] = [{"index": d.index, "data": d.data.decode(), "tags": dict(d.tags)} for d in got]
    got = sink.get(index=int(index), length=1, auto_delete=False)
    out["by_index"] = [{"index": d.index, "data": d.data.decode()} for d in got]
    out["search"] = sink.search(int(index))
    out["attrs"] = sink.attributes()
    out["delete"] = sink.delete([int(index)])
    out["after_delete"] = len(sink.get(request_id=rid, timeout="0s"))
    last = 0
    for i in range(5):
        last, _ = sink.put(f"t{i}".encode())
    sink.truncate(int(last) + 1)
    out["after_truncate"] = sink.attributes()["stream.length"]
    sink.put(b"w1")
    sink.put(b"w2")
    watcher = sink.watch(0, 5, index_only=True, auto_commit=False)
    seen = []
    for df in watcher.run():
        seen.append({"index": df.index, "data": df.data.decode()})
        sink.commit(df.index)
        if len(seen) == 2:
            break
    watcher.close()
    out["watch_index_only"] = seen
    out["after_commit"] = sink.attributes()["stream.length"]
    t0 = time.monotonic()
    out["empty_get"] = len(sink.get(timeout="1s"))
    out["empty_get_s"] = time.monotonic() - t0
    try:
        client(endpoint, service + "/nope", token).put(b"x")
        out["bad_path"] = None
    except PredictException as exc:
        out["bad_path"] = exc.code if hasattr(exc, "code") else str(exc)
    print(json.dumps(out))


def main():
    endpoint, service, token, mode = sys.argv[1:5]
    if mode == "roundtrip":
        roundtrip(endpoint, service, token, int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "poll":
        poll(endpoint, service, token, int(sys.argv[5]))
    else:
        api(endpoint, service, token)


if __name__ == "__main__":
    main()
