"""Demo custom service: a tiny OpenAI-style chat API, standard library only.

It stands in for a user's own container: it listens on $PORT, answers
`POST /v1/chat/completions` (plain and `stream: true` as server-sent events), `GET /v1/models`,
`POST /` (echo, for the eas-prediction SDK's StringRequest) and `GET /health` (readiness).
Its "model" is deterministic: it repeats the last user message, so calls are easy to check.

Run: python3 -m openeas.examples.chat_service.app --port 8000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "demo"
STREAM_DELAY_S = 0.05  # between streamed events, so clients can see them arrive one by one


def reply_text(messages: list[dict[str, Any]]) -> str:
    user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = str(user[-1].get("content", "")) if user else ""
    return f"You said: {last}" if last else "Hello! Send a user message and I will repeat it."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the gateway can pool connections
    server_version = "openeas-demo/0.1"

    def log_message(self, format: str, *args: Any) -> None:  # one line per request, to the log file
        print(f"{self.address_string()} {format % args}", flush=True)

    # -- helpers -------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": HTTPStatus(status).phrase, "code": status}})

    # -- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._send(
                200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "openeas"}]}
            )
        else:
            self._error(404, f"no route GET {self.path}; try POST /v1/chat/completions")

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/":
            self._send(200, body, content_type=self.headers.get("Content-Type") or "application/octet-stream")
            return
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route POST {self.path}; try POST /v1/chat/completions")
            return
        try:
            req = json.loads(body or b"{}")
            messages = req["messages"]
            if not isinstance(messages, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self._error(400, "the body must be JSON with a `messages` list, as in the OpenAI chat API")
            return
        model = str(req.get("model") or MODEL_ID)
        text = reply_text(messages)
        if req.get("stream"):
            self._stream(model, text)
        else:
            self._send(200, completion(model, text, messages))

    def _stream(self, model: str, text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cid = "chatcmpl-" + uuid.uuid4().hex
        words = text.split(" ")
        for i, word in enumerate(words):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            self._chunk(chunk_event(cid, model, delta, None))
            time.sleep(STREAM_DELAY_S)
        self._chunk(chunk_event(cid, model, {}, "stop"))
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def completion(model: str, text: str, messages: list[Any]) -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk_event(cid: str, model: str, delta: dict[str, str], finish: str | None) -> bytes:
    event = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"demo chat service listening on {args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
