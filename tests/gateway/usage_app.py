"""An OpenAI-like instance that reports token `usage`, for the token-limit tests (stdlib only).

    python tests/gateway/usage_app.py --name NAME

prints `upstream NAME listening PORT`. Any POST answers a chat completion whose usage is
`?tokens=N` tokens (default 30: N - 10 prompt + 10 completion): a JSON body, or with
`"stream": true` Server-Sent Events (three content chunks, then, when the request set
`stream_options.include_usage`, a chunk with the usage, then `data: [DONE]`).
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        tokens = int(parse_qs(urlsplit(self.path).query).get("tokens", ["30"])[0])
        usage = {"prompt_tokens": tokens - 10, "completion_tokens": 10, "total_tokens": tokens}
        if not body.get("stream"):
            out = json.dumps(
                {"object": "chat.completion", "choices": [{"message": {"content": "ok"}}], "usage": usage}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        events = [{"choices": [{"delta": {"content": w}}], "usage": None} for w in ("a", "b", "c")]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"choices": [], "usage": usage})
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"upstream {args.name} listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
