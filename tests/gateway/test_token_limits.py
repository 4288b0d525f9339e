"""Tokens-per-minute limits (`networking.gateway_policy.token_rate_limit`, issue 16 item 4).

A real OpenAI-like instance (`usage_app.py`) reports `usage`; an in-process gateway counts it:
JSON bodies and the last SSE chunk with usage count, a stream without usage counts nothing, and
once the minute's budget is spent the gateway answers 429 with Retry-After. The same limit shared
by two replicas x two workers in Redis is in test_shared_limits.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from openeas.gateway.limits import usage_tokens
from openeas.gateway.snapshot import RoutingSnapshot
from tests.gateway.inprocess import route, running_gateway

TOKEN = "tok-Tokens-0123456789abcdefghij"
AUTH = {"Authorization": TOKEN}
USAGE_APP = Path(__file__).resolve().parent / "usage_app.py"


def start_usage_app() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, str(USAGE_APP), "--name", "u"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert "listening" in line, line
    return proc, int(line.rsplit(" ", 1)[1])


@pytest.fixture(scope="module")
def usage_port() -> Iterator[int]:
    proc, port = start_usage_app()
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


def chat(stream: bool = False, include_usage: bool = False) -> bytes:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def test_usage_tokens_reads_the_last_usage() -> None:
    assert usage_tokens(b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}') == 12
    assert usage_tokens(b'data: {"usage": {"prompt_tokens": 5, "completion_tokens": 7}}\n\n') == 12
    assert usage_tokens(b'data: {"usage": null}\n\ndata: [DONE]\n\n') == 0


@pytest.mark.parametrize("stream", [False, True])
def test_token_budget_answers_429_with_retry_after(usage_port: int, stream: bool) -> None:
    snap = RoutingSnapshot(
        version=1, services={"llm": route("llm", TOKEN, [usage_port], token_rate_limit=100)}
    )
    with running_gateway(snap) as gw, requests.Session() as s:
        codes = []
        retry = ""
        for _ in range(6):  # 30 tokens each: 0, 30, 60, 90 pass (under 100), then spent
            r = s.post(
                gw.url("llm", "/v1/chat/completions"), data=chat(stream, stream), headers=AUTH, timeout=10
            )
            codes.append(r.status_code)
            if r.status_code == 429:
                retry = r.headers["Retry-After"]
                assert "token rate limit of 100 tokens per minute" in r.json()["message"]
        assert codes == [200, 200, 200, 200, 429, 429], codes
        # 20 tokens over, refilled at 100/60 per second: about 12 s
        assert 5 <= int(retry) <= 13, retry


def test_a_stream_without_usage_counts_nothing(usage_port: int) -> None:
    snap = RoutingSnapshot(
        version=1, services={"llm": route("llm", TOKEN, [usage_port], token_rate_limit=100)}
    )
    with running_gateway(snap) as gw, requests.Session() as s:
        for _ in range(8):
            r = s.post(
                gw.url("llm", "/v1/chat/completions"), data=chat(True, False), headers=AUTH, timeout=10
            )
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
